"""Every way the server closes a socket: a close code and its reason, each defined once.

As Centrifuge keeps its disconnects in disconnect.go: a handler, the delivery engine or
a sweep closes a socket with one of these, never with a number and a string of its own.
The page (web/static/app.js) reconnects with jittered backoff after 1006, 1011, 1012 and
1013; 4000-4999 are the application's own, and it does not reconnect on them.
"""

from __future__ import annotations

from typing import NamedTuple


class Disconnect(NamedTuple):
    """A close frame's code and reason (`close(*LOGGED_OUT)`)."""

    code: int
    reason: str


PING_TIMEOUT = Disconnect(1000, "ping timed out")
STORAGE_UNAVAILABLE = Disconnect(1011, "storage unavailable")
SERVICE_RESTART = Disconnect(1012, "server restarting")  # the page reconnects elsewhere
TOKEN_EXPIRED = Disconnect(4001, "token expired")
LOGGED_OUT = Disconnect(4002, "logged out")
# The user opened more than CONNECTIONS_PER_USER sockets; this was the oldest.
TOO_MANY_SOCKETS = Disconnect(4008, "too many connections")
TOO_SLOW = Disconnect(4009, "too slow")  # the client stopped reading (OrderedDelivery.stalled)
