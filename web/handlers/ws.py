"""WS /ws: one socket per tab, registered per user, fed by this process's Redis subscriber."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from notifier import messages
from notifier.notifications import NotificationRepository
from web.handlers.base import BaseHandler

log = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's own; the page does not reconnect on them).
TOKEN_EXPIRED = 4001
LOGGED_OUT = 4002
FORMATS = ("html", "json")


class NotificationsWebSocketHandler(BaseHandler, WebSocketHandler):
    """A user's live notifications, as htmx fragments or JSON envelopes."""

    user_id: str
    format: str

    def request_token(self) -> str | None:
        """Sockets may also carry the token as `?token=` (browsers cannot set WS headers)."""
        return self.get_query_argument("token", None) or super().request_token()

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authenticate before the upgrade: no valid token, no socket (401)."""
        identity = self.identity
        if identity is None:
            self.write_json(_error("unauthorized", "a valid token is required"), 401)
            return
        fmt = self.get_query_argument("format", "html")
        if fmt not in FORMATS:
            self.write_json(_error("invalid_input", "format must be html or json"), 400)
            return
        self.user_id, self.format = identity.user_id, fmt
        self._expires_at = identity.expires_at
        # Until the welcome is sent, live messages queue here so none is lost or reordered.
        self._pending: list[str] | None = []
        self._expiry: object | None = None
        await super().get(*args, **kwargs)

    def get_compression_options(self) -> None:
        """No permessage-deflate: frames are small and compression costs CPU per socket."""
        return None

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Register, then greet with the unread count, then flush what arrived meanwhile."""
        self.registry.add(self)
        loop = IOLoop.current()
        self._expiry = loop.call_later(
            max(0.0, self._expires_at - time.time()), self._token_expired
        )
        try:
            unread = await NotificationRepository(self.db).unread_count(self.user_id)
        except Exception:
            log.exception("could not read the unread count")
            self.close(1011, "storage unavailable")
            return
        assert self.identity is not None
        me = {
            "user_id": self.user_id,
            "username": self.identity.username,
            "role": self.identity.role,
        }
        pending, self._pending = self._pending or [], None
        self.send(self.renderer.connected(me, unread, self.format))
        for payload in pending:
            self.send(payload)

    def on_message(self, message: str | bytes) -> None:
        """The client may ping; anything else gets an error and the socket stays open."""
        try:
            msg = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "ping":
            self.send(messages.envelope("pong", {}))
        else:
            self.send(messages.error("unknown_message", 'send {"type": "ping"}'))

    def on_close(self) -> None:
        """Unregister and stop the expiry timer."""
        self.registry.remove(self)
        if self._expiry is not None:
            IOLoop.current().remove_timeout(self._expiry)

    def send(self, payload: str) -> bool:
        """Write one message; a socket that fails is dropped without disturbing others."""
        if self._pending is not None:
            self._pending.append(payload)
            return True
        try:
            future = self.write_message(payload)
        except WebSocketClosedError:
            self.registry.remove(self)
            return False
        future.add_done_callback(self._written)
        return True

    def _written(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            self.registry.remove(self)

    def _token_expired(self) -> None:
        self._expiry = None
        self.close(TOKEN_EXPIRED, "token expired")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


default_handlers = [(r"/ws", NotificationsWebSocketHandler)]
