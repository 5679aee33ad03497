"""Which sockets are open for which user, on this web process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Render = Callable[[str], str]  # format -> payload


class Connection(Protocol):
    """An open socket as the registry sees it."""

    user_id: str
    format: str  # "html" or "json"
    socket_id: str  # unique across web processes

    def send(self, payload: str) -> bool:
        """Write one message; False when the socket is gone."""
        ...

    def offer(self, seq: int, render: Render) -> None:
        """Deliver the user's notification `seq` in order and at most once on this socket."""
        ...

    def resync(self, refresh_unread: bool = False) -> None:
        """Catch up from storage after the live stream may have missed something."""
        ...

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket."""
        ...


def render_once(render: Render) -> Render:
    """Wrap `render` so that each format is rendered once however many sockets ask."""
    payloads: dict[str, str] = {}

    def cached(fmt: str) -> str:
        payload = payloads.get(fmt)
        if payload is None:
            payload = payloads[fmt] = render(fmt)
        return payload

    return cached


class ConnectionRegistry:
    """User id -> set of open connections.

    Created and used only on the IOLoop thread, so it needs no locks.
    """

    def __init__(self) -> None:
        self._by_user: dict[str, set[Connection]] = {}
        self.added = 0  # connections registered since the process started

    def add(self, conn: Connection) -> None:
        """Register an open connection."""
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        self.added += 1

    def remove(self, conn: Connection) -> None:
        """Forget a connection; users with none left are dropped."""
        conns = self._by_user.get(conn.user_id)
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self._by_user[conn.user_id]

    def connections_for_user(self, user_id: str) -> list[Connection]:
        """The user's open connections (a copy, safe to iterate while sending)."""
        return list(self._by_user.get(user_id, ()))

    def offer_to_user(self, user_id: str, seq: int, render: Render) -> int:
        """Offer the user's notification `seq` to each of their sockets (rendered once)."""
        once = render_once(render)
        conns = self.connections_for_user(user_id)
        for conn in conns:
            conn.offer(seq, once)
        return len(conns)

    def resync_all(self) -> None:
        """Every socket catches up from storage (after the bus was cut off)."""
        for conns in list(self._by_user.values()):
            for conn in list(conns):
                conn.resync(refresh_unread=True)  # read marks may have been missed too

    def send_to_user(self, user_id: str, render: Render) -> int:
        """Send one message to each of the user's sockets, rendering it once per format."""
        return self._send(self.connections_for_user(user_id), render)

    def send_to_all(self, render: Render) -> int:
        """Send one message to every socket on this process."""
        return self._send([c for conns in self._by_user.values() for c in conns], render)

    def close_sockets(self, user_id: str, socket_ids: set[str], code: int, reason: str) -> None:
        """Close those of the user's sockets on this process that `socket_ids` names."""
        for conn in self.connections_for_user(user_id):
            if conn.socket_id in socket_ids:
                conn.close(code, reason)

    def close_user(self, user_id: str, code: int, reason: str) -> None:
        """Close every socket the user has on this process."""
        for conn in self.connections_for_user(user_id):
            conn.close(code, reason)

    def close_all(self, code: int, reason: str) -> None:
        """Close every socket on this process."""
        for user_id in list(self._by_user):
            self.close_user(user_id, code, reason)

    def users(self) -> list[str]:
        """The users with at least one socket here."""
        return list(self._by_user)

    def stats(self) -> dict[str, int]:
        """How many sockets and users this process holds."""
        return {
            "connections": sum(len(c) for c in self._by_user.values()),
            "users": len(self._by_user),
        }

    @staticmethod
    def _send(conns: list[Connection], render: Render) -> int:
        once = render_once(render)
        # A failed write unregisters that socket only (Connection.send does it).
        return sum(conn.send(once(conn.format)) for conn in conns)
