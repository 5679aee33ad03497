"""WS /ws: the Tornado side of a socket: handshake, authentication, origin, client protocol.

Ordered delivery (hold, gap fill, replay, repeats dropped, backpressure) is the core's
notifier.realtime.delivery.OrderedDelivery; this handler is its transport.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from redis import RedisError
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, WebSocketProtocol

from notifier.accounts.auth import Identity
from notifier.errors import InputError, RateLimited, Unauthorized
from notifier.notifications.announcements import AnnouncementRepository
from notifier.notifications.bulk import ReadRequest
from notifier.notifications.store import NotificationRepository, format_id, parse_id
from notifier.realtime import bus, messages
from notifier.realtime.delivery import Flushing, OrderedDelivery
from notifier.realtime.disconnect import STORAGE_UNAVAILABLE, TOO_MANY_SOCKETS
from notifier.realtime.events import EvictEvent
from notifier.realtime.socket_limit import BUDGET_REFILL, SocketLimit
from notifier.realtime.subscriber import Subscriber
from notifier.realtime.throttle import MESSAGES_PER_MINUTE, TokenBucket
from web.frames import PING, text_frame, write_frame
from web.handlers.base import AppSetting, BaseHandler
from web.handlers.notifications import mark_read
from web.lean import detach_receive, release_handshake

log = logging.getLogger(__name__)

FORMATS = ("html", "json")


class NotificationsWebSocketHandler(BaseHandler, WebSocketHandler):
    """A user's live notifications, as htmx fragments or JSON envelopes.

    Like the registry, every method runs on the IOLoop thread.
    """

    user_id: str
    format: str
    socket_id: str
    _acked = 0  # the newest seq acknowledged (from the state at connect, then by this socket)
    _opened = False  # open() ran: on_close cleans up
    _held = False  # the user's bus channel is held for this socket
    _closed_early: tuple[int | None, str | None] | None = None
    _recorded = False  # the socket is counted in Redis (socket_limit): forget it once

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

    async def token_is_current(self, identity: Identity) -> bool:
        """Checked in get(), in the same Redis round trip that records the socket."""
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authenticate before the upgrade: no valid, current token, no socket (401)."""
        identity = self.identity
        if identity is None:
            raise Unauthorized("a valid token is required")
        fmt = self.get_query_argument("format", "html")
        if fmt not in FORMATS:
            raise InputError("format must be html or json")
        self.user_id, self.format = identity.user_id, fmt
        self.socket_id = f"{self.settings['process']}:{os.urandom(6).hex()}"
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
            replay_limit=self.config.replay_limit,
        )
        # Registered before Redis counts it, so that an eviction finds it (its messages wait
        # for the greeting; an eviction before the upgrade closes it as soon as it opens).
        self.registry.add(self.delivery)
        try:
            refused = await self._arrive(identity)
            if refused == "revoked":
                raise Unauthorized("a valid token is required")
            if refused == "limited":
                message = "too many connections and resumes: wait a moment"
                raise RateLimited(message, math.ceil(1 / BUDGET_REFILL))
            await super().get(*args, **kwargs)
        finally:
            if not self._opened:  # refused: revoked, not an upgrade, a foreign origin...
                self.registry.remove(self.delivery)
                await self._forget_socket()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket; one closed before its upgrade is closed as it opens."""
        if self.ws_connection is None and not self._opened:
            self._closed_early = (code, reason)
            return
        super().close(code, reason)

    @property
    def token_version(self) -> int:
        """The version of the token this socket was opened with (web/expiry.py reads it)."""
        assert self.identity is not None
        return self.identity.version

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol, reading frames from a task of its own (see web/lean.py)."""
        protocol = super().get_websocket_protocol()
        if self.settings["fast_frames"]:
            detach_receive(protocol)
        return protocol

    def get_compression_options(self) -> None:
        """No permessage-deflate: frames are small and compression costs CPU per socket."""
        return None

    subscriber = AppSetting[Subscriber]("subscriber")  # this process's users' channels
    repo = AppSetting[NotificationRepository]("notifications")  # the process's one

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Register, greet, then replay from `last_id` (or start fresh) and go live.

        One Redis round trip (socket limit and presence) and, usually, one MongoDB read
        (the user's state document); announcements are queried only when one newer than
        the user's mark may exist, and the replay only when something may be missed.
        """
        # Every message goes out at once: Nagle's algorithm would hold a small frame until
        # the client acknowledged the last one (up to its 40 ms delayed ACK).
        self.set_nodelay(True)
        self._opened = True
        if self._closed_early is not None:  # evicted during the handshake
            self.close(*self._closed_early)
            return
        # Subscribe first, then read: whatever is published from now on reaches this socket
        # (held until start_from below), and the state read after it knows the rest.
        self._held = True
        await self.subscriber.hold(self.user_id)
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # closed meanwhile (evicted, or the client left): on_close has run
        self._expiry = self.settings["expiry"].add(self._expires_at, self)  # web/expiry.py
        last_id = self.get_query_argument("last_id", None, strip=False)
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
            self._acked = state.acked_seq  # what a page showed already: acks below it are no news
        except PyMongoError:
            log.exception("could not read the user's notifications")
            self.close(*STORAGE_UNAVAILABLE)
            return
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # the client left while its history was read: on_close has run
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
        if self.settings["fast_frames"]:
            release_handshake(self)  # the request is gone after this: see web/lean.py

    async def _arrive(self, identity: Identity) -> str | None:
        """Check the token's version and the user's budget, count the socket against the
        user's limit everywhere and note the user present (one Redis round trip); None,
        or why the socket is refused: "revoked" or "limited" (out of budget).

        The oldest sockets over the limit are closed: this process's at once, the others by
        their processes (through the bus). With Redis unreachable the socket is let in
        unrecorded: tokens still expire, and an outage must not log everyone out.
        """
        limit = SocketLimit(self.settings["link"], self.config.connections_per_user)
        process = self.settings["process"]
        try:
            arrival = await limit.arrived(self.user_id, self.socket_id, process, identity.version)
            self._recorded = arrival.recorded
            if arrival.cached_version is None and not await super().token_is_current(identity):
                await self._forget_socket()  # not cached: MongoDB said it is revoked
                return "revoked"
            if arrival.revoked:
                return "revoked"
            if arrival.limited:
                return "limited"
            here = f"{process}:"
            self.registry.close_sockets(
                self.user_id,
                {s for s in arrival.evicted if s.startswith(here)},
                *TOO_MANY_SOCKETS,
            )
            elsewhere = [s for s in arrival.evicted if not s.startswith(here)]
            if elsewhere:
                event = EvictEvent(user_id=self.user_id, socket_ids=elsewhere)
                await bus.publish_async(self.bus, event)
        except (RedisError, OSError) as e:
            log.warning("socket limit and presence not recorded (redis unavailable: %s)", e)
        return None

    async def _forget_socket(self) -> None:
        if not self._recorded:
            return
        self._recorded = False
        try:
            last_here = not self.registry.connections_for_user(self.user_id)
            await SocketLimit(self.settings["link"], self.config.connections_per_user).left(
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
            frame = messages.read_frame(message)
        except InputError as e:  # a frame of ours with fields it does not have
            self.delivery.send(messages.error(e.code, e.message))
            return
        except messages.UnknownFrame:
            frame = None
        match frame:
            case messages.Ping():
                self.delivery.send(messages.encode(messages.Pong()))
            case messages.Resume(last_id=last_id) if self.delivery.started:
                await self._resume(last_id)
            case messages.MarkRead():
                await self._mark_read(frame)
            case messages.Ack(last_id=last_id):
                await self._ack(last_id)
            case _:
                self.delivery.send(
                    messages.error(
                        "unknown_message", 'send {"type": "ping"}, "resume", "mark-read" or "ack"'
                    )
                )

    async def _resume(self, last_id: object) -> None:
        """`{"type": "resume", "last_id": id}`: replay from there (the newest REPLAY_LIMIT at
        most), each costing one of the user's budget, shared by all their sockets."""
        limit = SocketLimit(self.settings["link"], self.config.connections_per_user)
        try:
            if not await limit.spend(self.user_id):
                message = "too many connections and resumes: wait a moment"
                self.delivery.send(messages.error("rate_limited", message))
                return
        except (RedisError, OSError) as e:
            log.warning("resume not counted (redis unavailable: %s)", e)
        try:
            max_seq = await self.repo.max_seq(self.user_id)
        except PyMongoError:
            self.delivery.send(messages.error("unavailable", "try resuming again shortly"))
            return
        self.delivery.start_from(last_id, max_seq)

    async def _ack(self, last_id: object) -> None:
        """`{"type": "ack", "last_id": id}`: a person saw everything up to it (no reply).

        It is what decides offline email (notifier/email/service.py). An ack counts up to
        the newest notification this socket was sent (so never past the user's newest),
        and one that moves nothing on writes nothing: a client repeating acks costs no
        query. Otherwise one write, with no read. Tornado runs one on_message at a time,
        so a ping sent after an ack is answered once the ack is stored.
        """
        try:
            seq = min(parse_id(last_id, "last_id"), self.delivery.last_seq or 0)
            if seq <= self._acked:
                return
            await self.repo.mark_acknowledged(self.user_id, seq)
            self._acked = seq
        except InputError as e:
            self.delivery.send(messages.error(e.code, e.message))
        except PyMongoError:
            log.exception("storing an acknowledgement failed")
            self.delivery.send(messages.error("unavailable", "try acknowledging again shortly"))

    async def _mark_read(self, frame: messages.MarkRead) -> None:
        """`{"type": "mark-read", "ids": [...]}` or `"all": true`, as POST /api/notifications/read.

        Every tab of the user, this one included, hears of it through the bus.
        """
        try:
            await mark_read(self, self.user_id, ReadRequest.parse(frame.body()))
        except InputError as e:
            self.delivery.send(messages.error(e.code, e.message))
        except (PyMongoError, RedisError, OSError):
            log.exception("marking read from a socket failed")
            self.delivery.send(messages.error("unavailable", "try marking read again shortly"))

    def on_close(self) -> None:
        """Unregister, stop the expiry timer and any replay, note announcements as seen."""
        if not self._opened:  # the client left during the handshake: get() cleans up
            return
        self.registry.remove(self.delivery)
        self.delivery.stop()
        if self._held:
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
        """Ping the client; False when it is gone."""
        conn = self.ws_connection
        if conn is None or conn.stream is None or conn.is_closing():
            return False
        try:
            if self.settings["fast_frames"]:
                write_frame(conn.stream, PING)  # straight to the socket
            else:
                self.ping()
        except (StreamClosedError, WebSocketClosedError):
            return False
        self.pong_due = True
        return True

    def on_pong(self, data: bytes) -> None:
        """The client answered a ping."""
        self.pong_due = False

    # The delivery's transport --------------------------------------------------------------

    def send_text(self, payload: str) -> bool | Flushing:
        """One text frame: True sent, False gone, else flushing (web/transport.py)."""
        conn = self.ws_connection
        if conn is None or conn.stream is None or conn.is_closing():
            return False
        if not self.settings["fast_frames"]:
            try:
                return self.write_message(payload)  # Tornado's stock path: a Future
            except WebSocketClosedError:
                return False
        try:
            # The same frame for every socket of this format in a fan-out (see web/frames.py).
            pending = write_frame(conn.stream, text_frame(payload))
        except StreamClosedError:
            return False
        return True if pending is None else pending


default_handlers = [(r"/ws", NotificationsWebSocketHandler)]
