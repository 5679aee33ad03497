"""One sweep a second closes the sockets whose token expired (instead of a timer each).

The same queue knows every open socket and its token, so it also closes those whose
token was revoked while this process was off the bus (their logout event lost with it).
"""

from __future__ import annotations

import time
from typing import Protocol

from tornado.ioloop import PeriodicCallback

from notifier.accounts.revocation import GONE
from notifier.realtime.expiry import Entry, ExpiryQueue

SWEEP_EVERY = 1.0  # seconds; a socket outlives its token by at most this much


class Closable(Protocol):
    """A socket, as the sweep sees it."""

    @property
    def user_id(self) -> str:
        """Whose token it was opened with."""
        ...

    @property
    def token_version(self) -> int:
        """The version of that token (see notifier/accounts/revocation.py)."""
        ...

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with a code and reason."""
        ...


class ExpirySweep:
    """The process's sockets by token expiry, swept while any is open.

    The callback starts with the first socket and stops when none is left, so an idle
    process does not wake up every second (and it always runs on the loop that serves).
    Used only on the IOLoop thread.
    """

    def __init__(self, code: int, reason: str, every: float = SWEEP_EVERY) -> None:
        self._queue: ExpiryQueue[Closable] = ExpiryQueue()
        self._code, self._reason, self._every = code, reason, every
        self._callback: PeriodicCallback | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, expires_at: float, sock: Closable) -> Entry:
        """Close `sock` at `expires_at` (epoch seconds); keep the entry for `discard`."""
        entry = self._queue.add(expires_at, sock)
        if self._callback is None:
            self._callback = PeriodicCallback(self.sweep, self._every * 1000)
            self._callback.start()
        return entry

    def discard(self, entry: Entry | None) -> None:
        """The socket closed first: forget it."""
        self._queue.discard(entry)

    def sweep(self) -> None:
        """Close every socket whose token has expired."""
        for sock in self._queue.due(time.time()):
            sock.close(self._code, self._reason)
        if not self._queue and self._callback is not None:
            self._callback.stop()
            self._callback = None

    def close_revoked(self, current: dict[str, int], code: int, reason: str) -> int:
        """Close the sockets whose token is older than its user's `current` version, or
        whose user is GONE (users missing from it are left alone); returns how many."""
        closed = 0
        for sock in self._queue.items():
            now = current.get(sock.user_id, sock.token_version)
            if now == GONE or sock.token_version < now:
                sock.close(code, reason)
                closed += 1
        return closed

    def users(self) -> set[str]:
        """The users with an open socket here."""
        return {sock.user_id for sock in self._queue.items()}
