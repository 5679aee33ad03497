"""The Tornado Application: routes and the shared clients every handler reads."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from redis import RedisError
from tornado.web import Application

from notifier.accounts.revocation import TokenVersions
from notifier.notifications.announcements import (
    AnnouncementRepository,
    LatestAnnouncement,
    SeenMarks,
)
from notifier.notifications.store import NotificationRepository
from notifier.realtime.bus import AsyncBusClient
from notifier.realtime.disconnect import LOGGED_OUT, TOKEN_EXPIRED
from notifier.realtime.fanout import FanOut
from notifier.realtime.registry import ConnectionRegistry
from notifier.realtime.resp import RedisLink
from notifier.realtime.subscriber import Subscriber, Subscription, Topology
from notifier.settings import Settings
from web import transport
from web.expiry import ExpirySweep
from web.handlers import (
    admin,
    auth,
    docs,
    email,
    health,
    items,
    notifications,
    preferences,
    push,
    watchlist,
    ws,
)
from web.handlers.pages import NotFoundHandler
from web.handlers.static import STATIC, NotifierStaticFileHandler
from web.logs import log_request
from web.pings import PingSweep
from web.render import Renderer
from web.taskqueue import TaskQueue

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # a client frame over this closes its socket (1009)
# While MongoDB cannot be reached, a request gets its 503 after this long, not PyMongo's
# default 30 s (web/handlers/base.py turns the failure into the 503).
MONGO_WAIT_MS = 3000


def mongo_client(config: Settings) -> AsyncMongoClient[dict[str, Any]]:
    """The web process's MongoDB client: an unreachable server is an answer in seconds."""
    return AsyncMongoClient(
        config.mongodb_uri, serverSelectionTimeoutMS=MONGO_WAIT_MS, connectTimeoutMS=MONGO_WAIT_MS
    )


def make_app(
    config: Settings,
    db: AsyncDatabase[dict[str, Any]],
    redis: aioredis.Redis,
    registry: ConnectionRegistry,
    process: str,
    bus_client: AsyncBusClient | None = None,
) -> Application:
    """Build the application around clients made on the running loop."""
    routes = [
        # First: Tornado tries the routes in order, and a reconnect storm is all /ws
        # (at the end of the list its handshakes paid 4% of their CPU matching the others).
        *ws.default_handlers,
        *auth.default_handlers,
        *notifications.default_handlers,
        *watchlist.default_handlers,
        *items.default_handlers,
        *preferences.default_handlers,
        *push.default_handlers,
        *email.default_handlers,
        *admin.default_handlers,
        *health.default_handlers,
        *docs.default_handlers,
    ]
    return Application(
        routes,
        config=config,
        db=db,
        redis=redis,
        # The handshake's Redis round trips, pipelined on one connection (see resp.py).
        link=RedisLink.from_url(config.redis_url),
        bus=bus_client or redis,  # the notification bus: a Redis Cluster, or REDIS_URL's
        registry=registry,
        renderer=Renderer(),
        # One repository for every socket's replays (a socket keeps a reference, not a copy).
        notifications=NotificationRepository(db),
        # The newest announcement time, kept by the fan-out (see LatestAnnouncement).
        announcements=LatestAnnouncement(),
        # Closed sockets' announcement marks, written together (a bulk write per 50 ms).
        seen_marks=SeenMarks(AnnouncementRepository(db)),
        tasks=TaskQueue(config.redis_url),  # Celery, imported by the first send
        process=process,
        subscription=Subscription(),  # kept by this process's Subscriber, read by /readyz
        expiry=ExpirySweep(*TOKEN_EXPIRED),  # closes sockets at token expiry
        static_path=str(STATIC),
        static_handler_class=NotifierStaticFileHandler,
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"samesite": "Lax", "secure": config.base_url.startswith("https")},
        # The fast path or Tornado's stock API, chosen by self-tests (web/transport.py).
        fast_frames=transport.choose(config.ws_transport),
        # Pings come from one sweep (web/pings.py), not from a task per socket.
        websocket_ping_interval=None,
        pings=PingSweep(config.ws_ping_interval) if config.ws_ping_interval else None,
        websocket_max_message_size=MAX_FRAME_BYTES,
        log_function=log_request,
        default_handler_class=NotFoundHandler,
    )


def live_path(app: Application, **options: float) -> Subscriber:
    """The bus -> sockets path of this process: its fan-out and its Subscriber.

    The Subscriber is kept in the settings (sockets hold their user's channel through it);
    the caller runs `subscriber.run()`. `options` go to the Subscriber (tests shorten its
    timings).
    """
    config: Settings = app.settings["config"]
    fanout = FanOut(app.settings["registry"], app.settings["announcements"])
    subscriber = Subscriber(
        Topology(config.redis_url, config.redis_cluster_url),
        fanout,
        on_bus_joined(app, fanout),
        state=app.settings["subscription"],
        after_batch=fanout.flush,
        **options,
    )
    app.settings["subscriber"] = subscriber
    app.settings["fanout"] = fanout  # /metrics writes its pending figures first
    return subscriber


def on_bus_joined(app: Application, fanout: FanOut) -> Callable[[], Awaitable[None]]:
    """What the process does each time it joins the bus (at start, and after losing it).

    Whatever was published meanwhile is lost to it: notifications are filled from MongoDB
    (FanOut.resubscribed), and so are revocations. A logout event lost with the bus would
    leave the user's sockets open until their tokens expire, so Redis first gets the
    versions it missed, then each socket's token is compared with its user's version as
    a new handshake would be (web/expiry.py).
    """
    versions = TokenVersions(app.settings["db"], app.settings["redis"])
    expiry: ExpirySweep = app.settings["expiry"]

    async def joined() -> None:
        await fanout.resubscribed()
        try:
            await versions.sync_uncached()
            closed = expiry.close_revoked(await versions.current_many(expiry.users()), *LOGGED_OUT)
        except (PyMongoError, RedisError, OSError) as e:  # their tokens still expire
            log.warning("revoked tokens not checked on joining the bus: %s", e)
            return
        if closed:
            log.info("closed %d socket(s) of tokens revoked while off the bus", closed)

    return joined
