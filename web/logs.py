"""Access logs without secrets: the `?token=` of a WebSocket URL never reaches a log line."""

from __future__ import annotations

import logging

from tornado.web import RequestHandler

from notifier.logs import redact

__all__ = ["log_request", "redact"]

access_log = logging.getLogger("tornado.access")


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request, like Tornado's, minus secrets, with ids."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    r = handler.request
    identity = getattr(handler, "_current_user", None)
    extra = {
        "request_id": getattr(handler, "request_id", None),
        "user_id": getattr(identity, "user_id", None),
    }
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        r.method,
        redact(r.uri or ""),
        r.remote_ip,
        1000.0 * r.request_time(),
        extra=extra,
    )
