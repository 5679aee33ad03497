"""WS /ws: the Tornado side of a socket: handshake, authentication, origin, client protocol.

Ordered delivery (hold, gap fill, replay, repeats dropped, backpressure) is the core's
notifier.realtime.delivery.OrderedDelivery; this handler is its transport.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from redis import RedisError
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketHandler

from notifier.errors import InputError
from notifier.notifications.announcements import AnnouncementRepository
from notifier.notifications.store import NotificationRepository, format_id, parse_id
from notifier.realtime import bus, messages
from notifier.realtime.delivery import (
    STORAGE_UNAVAILABLE,
    TOO_MANY_SOCKETS,
    Flushing,
    OrderedDelivery,
)
from notifier.realtime.events import EvictEvent
from notifier.realtime.socket_limit import SocketLimit
from notifier.realtime.subscriber import Subscriber
from notifier.realtime.throttle import MESSAGES_PER_MINUTE, TokenBucket
from web.frames import PING, text_frame, write_frame
from web.handlers.base import BaseHandler
from web.handlers.notifications import mark_read, parse_read_request
from web.lean import release_handshake

log = logging.getLogger(__name__)

FORMATS = ("html", "json")


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
        self._bucket = TokenBucket(MESSAGES_PER_MINUTE)
        self.delivery = OrderedDelivery(
            self.user_id,
            fmt,
            self.socket_id,
            transport=self,
            store=self.repo,
            payloads=self.renderer,
            forget=self.registry.remove,
            stall_seconds=self.config.ws_stall_seconds,
        )
        await super().get(*args, **kwargs)

    @property
    def token_version(self) -> int:
        """The version of the token this socket was opened with (web/expiry.py reads it)."""
        assert self.identity is not None
        return self.identity.version

    def get_compression_options(self) -> None:
        """No permessage-deflate: frames are small and compression costs CPU per socket."""
        return None

    @property
    def subscriber(self) -> Subscriber:
        """This process's subscriptions to the bus (its users' channels)."""
        subscriber: Subscriber = self.settings["subscriber"]
        return subscriber

    @property
    def repo(self) -> NotificationRepository:
        """Notifications in MongoDB (the process's one repository)."""
        repo: NotificationRepository = self.settings["notifications"]
        return repo

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Register, greet, then replay from `last_id` (or start fresh) and go live.

        One Redis round trip (socket limit and presence) and, usually, one MongoDB read
        (the user's state document); announcements are queried only when one newer than
        the user's mark may exist, and the replay only when something may be missed.
        """
        # Every message goes out at once: Nagle's algorithm would hold a small frame until
        # the client acknowledged the last one (up to its 40 ms delayed ACK).
        self.set_nodelay(True)
        self.registry.add(self.delivery)
        # Subscribe first, then read: whatever is published from now on reaches this socket
        # (held until start_from below), and the state read after it knows the rest.
        self._held = True
        await self.subscriber.hold(self.user_id)
        await self._enforce_limit()
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # closed meanwhile (evicted, or the client left): on_close has run
        self._expiry = self.settings["expiry"].add(self._expires_at, self)  # web/expiry.py
        last_id = self.get_query_argument("last_id", None)
        announcements = AnnouncementRepository(self.db)
        latest = self.settings["announcements"]
        try:
            state = await self.repo.state(self.user_id)
            max_seq, missed = state.max_seq, []
            if last_id is not None and last_id > format_id(max_seq):
                # Ids sort as seqs. The state may lag a writer that died mid-write.
                max_seq = await self.repo.max_seq(self.user_id)
            await latest.newest(announcements)  # a query once per process (and after gaps)
            if latest.may_be_news(state.announcements_seen_at):
                marked = datetime.now(UTC)
                missed = await announcements.missed_by(
                    self.user_id, state.announcements_seen_at, marked
                )
                self._seen_at: datetime | None = marked  # on close, only what came since
            else:
                self._seen_at = state.announcements_seen_at
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
        self.delivery.greet(
            self.renderer.connected(me, state.unread_count, self.format),
            [self.renderer.announcement({"announcement": a}, self.format) for a in missed],
        )
        self.delivery.start_from(last_id, max_seq)  # replays only when something may be missed
        if self.settings["pings"] is not None:
            self.pong_due = False  # set before the dict is rebuilt to size (web/lean.py)
            self._ping_bucket = self.settings["pings"].add(self)
        release_handshake(self)  # the request is gone after this: see web/lean.py

    async def _enforce_limit(self) -> None:
        """Count this socket against the user's limit everywhere and note the user present;
        evict the oldest over the limit (one Redis round trip).

        This process closes its own at once; the bus takes the others to their processes.
        """
        limit = SocketLimit(self.redis, self.config.connections_per_user)
        try:
            evicted = await limit.arrived(self.user_id, self.socket_id, self.settings["process"])
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
            log.warning("socket limit and presence not recorded (redis unavailable: %s)", e)

    async def _forget_socket(self) -> None:
        try:
            last_here = not self.registry.connections_for_user(self.user_id)
            await SocketLimit(self.redis, self.config.connections_per_user).left(
                self.user_id, self.socket_id, self.settings["process"], last_here
            )
        except (RedisError, OSError):
            pass  # the entry ages out, and is the first to go when the user opens more

    async def on_message(self, message: str | bytes) -> None:
        """ping -> pong; resume -> replay from last_id; mark-read; ack; anything else -> error."""
        if not self._bucket.take():
            self.delivery.send(
                messages.error("rate_limited", f"at most {MESSAGES_PER_MINUTE} messages a minute")
            )
            return
        try:
            msg = json.loads(message)
        except (ValueError, UnicodeDecodeError, RecursionError):  # "[" * 50_000 recurses
            msg = None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "ping":
            self.delivery.send(messages.envelope("pong", {}))
        elif kind == "resume" and isinstance(msg, dict) and self.delivery.started:
            try:
                max_seq = await self.repo.max_seq(self.user_id)
            except PyMongoError:
                self.delivery.send(messages.error("unavailable", "try resuming again shortly"))
                return
            self.delivery.start_from(msg.get("last_id"), max_seq)
        elif kind == "mark-read":
            await self._mark_read(msg)
        elif kind == "ack" and isinstance(msg, dict):
            await self._ack(msg.get("last_id"))
        else:
            self.delivery.send(
                messages.error(
                    "unknown_message", 'send {"type": "ping"}, "resume", "mark-read" or "ack"'
                )
            )

    async def _ack(self, last_id: object) -> None:
        """`{"type": "ack", "last_id": id}`: a person saw everything up to it (no reply).

        It is what decides offline email (notifier/email/service.py): one write per ack,
        never past the user's newest notification. Tornado runs one on_message at a time,
        so a ping sent after an ack is answered once the ack is stored.
        """
        try:
            await self.repo.acknowledge(self.user_id, parse_id(last_id, "last_id"))
        except InputError as e:
            self.delivery.send(messages.error(e.code, e.message))
        except PyMongoError:
            log.exception("storing an acknowledgement failed")
            self.delivery.send(messages.error("unavailable", "try acknowledging again shortly"))

    async def _mark_read(self, msg: object) -> None:
        """`{"type": "mark-read", "ids": [...]}` or `"all": true`, as POST /api/notifications/read.

        Every tab of the user, this one included, hears of it through the bus.
        """
        try:
            body = {k: v for k, v in msg.items() if k != "type"} if isinstance(msg, dict) else msg
            await mark_read(self, self.user_id, parse_read_request(body))
        except InputError as e:
            self.delivery.send(messages.error(e.code, e.message))
        except (PyMongoError, RedisError, OSError):
            log.exception("marking read from a socket failed")
            self.delivery.send(messages.error("unavailable", "try marking read again shortly"))

    def on_close(self) -> None:
        """Unregister, stop the expiry timer and any replay, note announcements as seen."""
        self.registry.remove(self.delivery)
        self.delivery.stop()
        if getattr(self, "_held", False):
            self.subscriber.release(self.user_id)
        IOLoop.current().add_callback(self._forget_socket)
        # It was open, so it heard every broadcast until now: noted, and written together
        # with the other sockets that close meanwhile (SeenMarks).
        if self.delivery.started and self.settings["announcements"].may_be_news(
            getattr(self, "_seen_at", None)
        ):
            self.settings["seen_marks"].note(self.user_id)
        self.settings["expiry"].discard(self._expiry)
        if self.settings["pings"] is not None:
            self.settings["pings"].discard(self, self._ping_bucket)

    # Pings (web/pings.py) ------------------------------------------------------------------

    _ping_bucket: int | None = None
    pong_due = False  # a ping went out and no pong came back yet

    def send_ping(self) -> bool:
        """Ping the client (the frame straight to the socket); False when it is gone."""
        conn = self.ws_connection
        if conn is None or conn.stream is None or conn.is_closing():
            return False
        try:
            write_frame(conn.stream, PING)
        except StreamClosedError:
            return False
        self.pong_due = True
        return True

    def on_pong(self, data: bytes) -> None:
        """The client answered a ping."""
        self.pong_due = False

    # The delivery's transport --------------------------------------------------------------

    def send_text(self, payload: str) -> bool | Flushing:
        """One text frame, straight to the socket: True sent, False gone, else flushing."""
        conn = self.ws_connection
        if conn is None or conn.stream is None or conn.is_closing():
            return False
        try:
            # The same frame for every socket of this format in a fan-out (see web/frames.py).
            pending = write_frame(conn.stream, text_frame(payload))
        except StreamClosedError:
            return False
        return True if pending is None else pending


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


default_handlers = [(r"/ws", NotificationsWebSocketHandler)]
