"""Access logs without secrets: the `?token=` of a WebSocket URL never reaches a log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tornado.web import RequestHandler

from notifier.logs import redact

__all__ = ["log_request", "redact"]

access_log = logging.getLogger("tornado.access")

UPGRADES_PER_SECOND = 20  # socket upgrades logged one by one; past that, a count


class Sample:
    """Lets through at most `per_second` lines a second and counts the rest.

    A reconnect storm upgrades thousands of sockets a second; a line each cost a fifth of
    a handshake. At ordinary rates every upgrade is logged; in a storm, the first ones of
    each second are, and the next line says how many were not.
    """

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._second = 0
        self._logged = 0
        self.skipped = 0

    def take(self) -> bool:
        """Whether this line may be logged."""
        second = int(self._clock())
        if second != self._second:
            self._second, self._logged = second, 0
        if self._logged < self.per_second:
            self._logged += 1
            return True
        self.skipped += 1
        return False


_upgrades = Sample(UPGRADES_PER_SECOND)


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request, like Tornado's, minus secrets, with ids."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level) or (status == 101 and not _upgrades.take()):
        return
    r = handler.request
    identity = getattr(handler, "_current_user", None)
    extra = {
        "request_id": getattr(handler, "request_id", None),
        "user_id": getattr(identity, "user_id", None),
    }
    skipped = ""
    if status == 101 and _upgrades.skipped:
        skipped, _upgrades.skipped = f" ({_upgrades.skipped} more upgrades not logged)", 0
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms%s",
        status,
        r.method,
        redact(r.uri or ""),
        r.remote_ip,
        1000.0 * r.request_time(),
        skipped,
        extra=extra,
    )
