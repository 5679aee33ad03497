"""WS /ws: one socket per tab, registered per user, fed by this process's Redis subscriber.

Each socket delivers its user's notifications in seq order and at most once: it knows
the last seq it sent, drops repeats, and when a live message skips ahead (the bus lost
something, or the client resumes from `last_id`) it replays the gap from MongoDB while
holding live messages back, then lets them through. A user's seqs have no holes, so a
jump always means a gap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import uuid
from typing import Any

from pymongo.errors import PyMongoError
from redis import RedisError
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketHandler

from notifier import metrics
from notifier.errors import InputError
from notifier.notifications.announcements import AnnouncementRepository
from notifier.notifications.store import NotificationRepository, parse_id, to_json
from notifier.realtime import bus, messages
from notifier.realtime.events import EvictEvent
from notifier.realtime.presence import Presence
from notifier.realtime.registry import Render
from notifier.realtime.socket_limit import SocketLimit
from web.frames import text_frame, write_frame
from web.handlers.base import BaseHandler
from web.handlers.notifications import mark_read, parse_read_request

log = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's own; the page does not reconnect on them).
STORAGE_UNAVAILABLE = 1011
TOKEN_EXPIRED = 4001
LOGGED_OUT = 4002
TOO_MANY_SOCKETS = 4008  # the user opened more than CONNECTIONS_PER_USER; this was the oldest
TOO_SLOW = 4009  # the client stopped reading (see _stalled)
STALLED_AT = 200  # unflushed messages past which a socket with no progress is dropped
MAX_UNFLUSHED = 5000  # the hard bound on what one socket may hold unsent
MESSAGES_PER_MINUTE = 100  # client messages; beyond this they get an error and are ignored
FORMATS = ("html", "json")
REPLAY_BATCH = 200
FRESH_LIST = 20  # what a client with an unusable last_id gets instead


class NotificationsWebSocketHandler(BaseHandler, WebSocketHandler):
    """A user's live notifications, as htmx fragments or JSON envelopes.

    Like the registry, every method runs on the IOLoop thread.
    """

    user_id: str
    format: str
    socket_id: str

    def request_token(self) -> str | None:
        """Sockets may also carry the token as `?token=` (browsers cannot set WS headers)."""
        return self.get_query_argument("token", None) or super().request_token()

    def check_origin(self, origin: str) -> bool:
        """A cookie-authenticated handshake must come from an allowed page (else 403).

        The cookie goes with any page's request, so another site could open a socket in
        the user's name; a `?token=` is never sent by the browser on its own.
        """
        if self.get_query_argument("token", None):
            return True
        origin = origin.rstrip("/").lower()
        allowed = {o.lower() for o in self.config.allowed_origins}
        if not allowed:
            base = urllib.parse.urlsplit(self.config.base_url)
            allowed = {
                f"{base.scheme}://{base.netloc}".lower(),
                f"{self.request.protocol}://{self.request.host}".lower(),
            }
        return origin in allowed

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
        self.socket_id = f"{self.settings['process']}:{uuid.uuid4().hex[:12]}"
        self._expires_at = identity.expires_at
        self._expiry: object | None = None
        # Until the greeting is out, other messages queue here.
        self._queued: list[str] | None = []
        # The last notification seq sent; None until open() knows where to start.
        self._last_seq: int | None = None
        self._held: list[tuple[int, Render]] = []
        self._filling: asyncio.Task[None] | None = None
        self._read_again = False
        self._refresh_unread = False
        self._unflushed = 0
        self._flushed_at = time.monotonic()
        self._allowance, self._allowance_at = float(MESSAGES_PER_MINUTE), time.monotonic()
        await super().get(*args, **kwargs)

    def get_compression_options(self) -> None:
        """No permessage-deflate: frames are small and compression costs CPU per socket."""
        return None

    @property
    def repo(self) -> NotificationRepository:
        """The user's notifications in MongoDB."""
        return NotificationRepository(self.db)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Register, greet, then replay from `last_id` (or start fresh) and go live."""
        self.registry.add(self)
        await self._enforce_limit()
        try:
            await Presence(self.redis, self.settings["process"]).here([self.user_id])
        except (RedisError, OSError) as e:
            log.warning("presence not recorded (redis unavailable: %s)", e)
        loop = IOLoop.current()
        self._expiry = loop.call_later(
            max(0.0, self._expires_at - time.time()), self._token_expired
        )
        try:
            max_seq = await self.repo.max_seq(self.user_id)
            unread = await self.repo.unread_count(self.user_id)
            missed = await AnnouncementRepository(self.db).missed_by(self.user_id)
        except PyMongoError:
            log.exception("could not read the user's notifications")
            self.close(STORAGE_UNAVAILABLE, "storage unavailable")
            return
        assert self.identity is not None
        me = {
            "user_id": self.user_id,
            "username": self.identity.username,
            "role": self.identity.role,
        }
        queued, self._queued = self._queued or [], None
        self.send(self.renderer.connected(me, unread, self.format))
        for payload in queued:
            self.send(payload)
        for announcement in missed:
            self.send(self.renderer.announcement({"announcement": announcement}, self.format))
        self._start_from(self.get_query_argument("last_id", None), max_seq)

    def _allowed(self) -> bool:
        """A token bucket: MESSAGES_PER_MINUTE, refilled continuously."""
        now = time.monotonic()
        refill = (now - self._allowance_at) * MESSAGES_PER_MINUTE / 60
        self._allowance = min(float(MESSAGES_PER_MINUTE), self._allowance + refill)
        self._allowance_at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def _enforce_limit(self) -> None:
        """Count this socket against the user's limit everywhere; evict the oldest over it.

        This process closes its own at once; the bus takes the others to their processes.
        """
        limit = SocketLimit(self.redis, self.config.connections_per_user)
        try:
            evicted = await limit.opened(self.user_id, self.socket_id)
            here = f"{self.settings['process']}:"
            self.registry.close_sockets(
                self.user_id,
                {s for s in evicted if s.startswith(here)},
                TOO_MANY_SOCKETS,
                "too many connections",
            )
            elsewhere = [s for s in evicted if not s.startswith(here)]
            if elsewhere:
                event = EvictEvent(user_id=self.user_id, socket_ids=elsewhere)
                await bus.publish_async(self.bus, event)
        except (RedisError, OSError) as e:
            log.warning("socket limit not enforced (redis unavailable: %s)", e)

    async def _forget_socket(self) -> None:
        try:
            if not self.registry.connections_for_user(self.user_id):
                await Presence(self.redis, self.settings["process"]).gone(self.user_id)
            await SocketLimit(self.redis, self.config.connections_per_user).closed(
                self.user_id, self.socket_id
            )
        except (RedisError, OSError):
            pass  # the entry ages out, and is the first to go when the user opens more

    async def on_message(self, message: str | bytes) -> None:
        """ping -> pong; resume -> replay from last_id; anything else -> error."""
        if not self._allowed():
            self.send(
                messages.error("rate_limited", f"at most {MESSAGES_PER_MINUTE} messages a minute")
            )
            return
        try:
            msg = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "ping":
            self.send(messages.envelope("pong", {}))
        elif kind == "resume" and isinstance(msg, dict) and self._last_seq is not None:
            try:
                max_seq = await self.repo.max_seq(self.user_id)
            except PyMongoError:
                self.send(messages.error("unavailable", "try resuming again shortly"))
                return
            self._start_from(msg.get("last_id"), max_seq)
        elif kind == "mark-read":
            await self._mark_read(msg)
        else:
            self.send(
                messages.error("unknown_message", 'send {"type": "ping"}, "resume" or "mark-read"')
            )

    async def _mark_read(self, msg: object) -> None:
        """`{"type": "mark-read", "ids": [...]}` or `"all": true`, as POST /api/notifications/read.

        Every tab of the user, this one included, hears of it through the bus.
        """
        try:
            body = {k: v for k, v in msg.items() if k != "type"} if isinstance(msg, dict) else msg
            await mark_read(self, self.user_id, parse_read_request(body))
        except InputError as e:
            self.send(messages.error(e.code, e.message))
        except (PyMongoError, RedisError, OSError):
            log.exception("marking read from a socket failed")
            self.send(messages.error("unavailable", "try marking read again shortly"))

    def on_close(self) -> None:
        """Unregister, stop the expiry timer and any replay, note announcements as seen."""
        self.registry.remove(self)
        IOLoop.current().add_callback(self._forget_socket)
        if self._last_seq is not None:  # it was open: it heard every broadcast until now
            IOLoop.current().add_callback(self._announcements_seen)  # the loop keeps it alive
        if self._expiry is not None:
            IOLoop.current().remove_timeout(self._expiry)
        if self._filling is not None:
            self._filling.cancel()

    # Delivery -----------------------------------------------------------------------------

    def send(self, payload: str) -> bool:
        """Write one message; a socket that fails is dropped without disturbing others."""
        if self._queued is not None:
            self._queued.append(payload)
            return True
        if self._stalled():
            # The client stopped reading: drop it rather than buffer without bound. It
            # resumes from its last_id when it comes back.
            self.registry.remove(self)
            self.close(TOO_SLOW, "too slow")
            return False
        conn = self.ws_connection
        if conn is None or conn.stream is None or conn.is_closing():
            self.registry.remove(self)
            return False
        try:
            # The same frame for every socket of this format in a fan-out (see web/frames.py).
            pending = write_frame(conn.stream, text_frame(payload))
        except StreamClosedError:
            self.registry.remove(self)
            return False
        if pending is not None:  # the kernel's buffer is full: count it until it is flushed
            if not self._unflushed:
                self._flushed_at = time.monotonic()  # the client starts lagging from now
            self._unflushed += 1
            pending.add_done_callback(self._written)
        return True

    def offer(self, seq: int, render: Render) -> None:
        """A live notification: send it if it is the next one, drop a repeat, fill a gap."""
        if self._last_seq is None or self._filling is not None:
            self._held.append((seq, render))
        elif seq == self._last_seq + 1:
            self._last_seq = seq
            self.send(render(self.format))
        elif seq > self._last_seq:
            self._held.append((seq, render))
            metrics.GAP_FILLS.inc()
            self.resync()

    def resync(self, refresh_unread: bool = False) -> None:
        """Replay from MongoDB whatever came after the last seq sent (once at a time)."""
        self._refresh_unread |= refresh_unread
        if self._filling is not None:
            self._read_again = True  # the running replay may have read before the news
        elif self._last_seq is not None:
            self._filling = asyncio.ensure_future(self._fill())

    def _start_from(self, last_id: object, max_seq: int) -> None:
        """Begin (again) after `last_id`; an unusable one gets an error and a fresh list."""
        start = max_seq
        if last_id is not None:
            try:
                start = parse_id(last_id, "last_id")
                if start > max_seq:
                    raise InputError("last_id is not one of your notifications")
            except InputError as e:
                self.send(messages.error("invalid_last_id", e.message))
                start = max(0, max_seq - FRESH_LIST)
        self._last_seq = start
        self.resync()

    async def _fill(self) -> None:
        try:
            while True:
                # Everything held now was published, so stored, before this replay reads.
                ready, self._held, self._read_again = self._held, [], False
                await self._replay_from_store()
                for seq, render in sorted(ready, key=lambda held: held[0]):
                    assert self._last_seq is not None
                    if seq > self._last_seq:
                        self._last_seq = seq
                        self.send(render(self.format))
                if self._refresh_unread:
                    self._refresh_unread = False
                    unread = await self.repo.unread_count(self.user_id)
                    self.send(self.renderer.unread(unread, self.format))
                # Nothing may be left held when the replay stops (offers hold while it runs).
                if not self._held and not self._read_again:
                    return
        except PyMongoError:
            log.exception("replay for a socket failed; closing it so the client resumes")
            self.close(STORAGE_UNAVAILABLE, "storage unavailable")
        finally:
            self._filling = None

    async def _replay_from_store(self) -> None:
        while True:
            assert self._last_seq is not None
            docs = await self.repo.after(self.user_id, self._last_seq, REPLAY_BATCH)
            if not docs:
                return
            unread = await self.repo.unread_count(self.user_id)
            for doc in docs:
                self._last_seq = doc["seq"]
                event = {"notification": to_json(doc), "unread_count": unread}
                self.send(self.renderer.notification(event, self.format))
            if len(docs) < REPLAY_BATCH:
                return

    async def _announcements_seen(self) -> None:
        try:
            await AnnouncementRepository(self.db).mark_seen(self.user_id)
        except PyMongoError:
            # Expected while the process shuts down: at worst an announcement shows once more.
            log.info("could not note announcements as seen for a closed socket")

    def _stalled(self) -> bool:
        """Many messages unsent and none flushed for a while, or far too many unsent."""
        if self._unflushed < STALLED_AT:  # the common case, decided without a clock read
            return False
        if self._unflushed >= MAX_UNFLUSHED:
            return True
        return time.monotonic() - self._flushed_at > self.config.ws_stall_seconds

    def _written(self, future: Any) -> None:
        self._unflushed -= 1
        self._flushed_at = time.monotonic()
        if future.cancelled() or future.exception() is not None:
            self.registry.remove(self)

    def _token_expired(self) -> None:
        self._expiry = None
        self.close(TOKEN_EXPIRED, "token expired")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


default_handlers = [(r"/ws", NotificationsWebSocketHandler)]
