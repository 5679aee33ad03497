"""Serving $PORT: one web process (`serve`), alone or as one of WEB_CONCURRENCY.

With WEB_CONCURRENCY > 1, web/supervisor.py forks that many children, each listening on
the port with SO_REUSEPORT (`serve(config, reuse_port=True)`). Each child is a whole web
process: its own loop, registry, bus subscriptions and metrics (prometheus-client's
multiprocess files, so any child's /metrics sums them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import redis.asyncio as aioredis
from tornado.netutil import bind_sockets

from notifier.realtime import bus
from notifier.realtime.disconnect import SERVICE_RESTART
from notifier.realtime.registry import ConnectionRegistry
from notifier.settings import ConfigurationError, Settings
from notifier.storage.schema import ensure_indexes_async
from web import stats
from web.app import live_path, make_app, mongo_client
from web.server import NotifierHTTPServer

log = logging.getLogger("web")

SHUTDOWN_GRACE = 5.0
# Connections the kernel queues while the loop is busy (the kernel caps it at
# net.core.somaxconn). Tornado's default of 128 overflows when a reconnect storm's
# handshakes arrive during one turn of the loop: the kernel then drops them, and each
# client waits a second or more to retry its SYN.
LISTEN_BACKLOG = 4096
REDIS_CONNECTIONS = 100


async def main(config: Settings, sockets: list[socket.socket]) -> None:
    """Build clients on this loop, serve until SIGTERM or SIGINT, then close cleanly.

    Raises whatever ended the subscriber (a bug: outages are retried).
    """
    mongo = mongo_client(config)
    db = mongo.get_default_database("notifier")
    await ensure_indexes_async(db, config.price_history_days)
    # A burst of handshakes waits its turn for a connection instead of failing with
    # "Too many connections" (which would skip presence and the socket limit).
    redis = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(
            config.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=10,
            health_check_interval=10,
        )
    )
    bus_client = bus.async_client(config, redis)
    registry = ConnectionRegistry()
    process = f"{socket.gethostname()}:{os.getpid()}:{config.port}"
    app = make_app(config, db, redis, registry, process, bus_client)
    # What start-up built lives as long as the process: keep it out of every collection,
    # so a full one (a pause of 100 ms and more in a storm of connects) walks less.
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
    server = NotifierHTTPServer(
        app,
        trusted_proxies=config.trusted_proxies,
        header_timeout=config.header_timeout,
        idle_timeout=config.idle_timeout,
        connections_per_address=config.connections_per_address,
    )
    server.add_sockets(sockets)
    listener = asyncio.create_task(live_path(app).run())
    background = [
        listener,
        asyncio.create_task(stats.report(redis, process, registry)),
        asyncio.create_task(keep_long_lived_frozen(registry)),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("notifier web listening on port %d (pid %d)", config.port, os.getpid())
    stopping = asyncio.create_task(stop.wait())
    # The subscriber only ends by failing (a bug, not an outage): then the process stops too.
    await asyncio.wait([stopping, listener], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failure = listener.exception() if listener.done() else None
    if failure is not None:
        log.error("stopping: %s", failure)

    log.info("shutting down: closing %d socket(s)", registry.stats()["connections"])
    server.stop()
    registry.close_all(*SERVICE_RESTART)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE)
    await stop_tasks(background, SHUTDOWN_GRACE)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.settings["seen_marks"].flush(), SHUTDOWN_GRACE)
    if bus_client is not redis:
        await bus_client.aclose()
    await redis.aclose()
    await app.settings["link"].aclose()
    await mongo.close()
    if failure is not None:
        raise failure


# A full collection after every 100th of the middle generation, not every 10th: what lives
# long is frozen (keep_long_lived_frozen), so a full one found nothing, yet walked every
# object younger than the last freeze. 11,000 connects ran 13-15 of them, 7-22 ms each
# (about 200 ms in all, and as many pauses for the sockets already open); now none.
FULL_COLLECTION_AFTER = 100
FREEZE_EVERY = 10.0  # seconds
FREEZE_AFTER_SOCKETS = 1000  # ... or as soon as this many sockets opened since the last


async def keep_long_lived_frozen(registry: ConnectionRegistry) -> None:
    """Keep what has lived a while out of the collector's full collections (gc.freeze).

    A full collection walks every tracked object: at 19,000 sockets (a couple of million
    objects) one stalled the loop for up to a second, and a storm of connects ran one
    each time the heap grew by a quarter. Objects that survived the young collections
    are frozen instead (a constant-time splice of lists): every FREEZE_EVERY seconds, and
    sooner in a storm of connects. That is safe because a closed socket leaves no
    reference cycle (OrderedDelivery.stop breaks the only one, between a handler and its
    delivery; tests/test_lean.py holds it): it is freed by reference counting, frozen or
    not. What else becomes cyclic garbage after being frozen stays.
    """
    loop = asyncio.get_running_loop()
    frozen_at, added = loop.time(), registry.added
    while True:
        await asyncio.sleep(1.0)
        if registry.added - added < FREEZE_AFTER_SOCKETS and loop.time() - frozen_at < FREEZE_EVERY:
            continue
        gc.collect(1)  # the young garbage goes first: only survivors are frozen
        gc.freeze()
        frozen_at, added = loop.time(), registry.added


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when it is installed (Linux), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Cancel the tasks, again and again, until they finish or the time is up.

    A cancellation can be lost inside a client library's own timeout handling (seen here
    about once in 25 shutdowns, with the task parked on its next sleep), so one cancel()
    is not enough to stop a loop reliably.
    """
    pending = set(tasks)
    deadline = asyncio.get_running_loop().time() + grace
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    if pending:
        log.warning("%d background task(s) did not stop", len(pending))


def serve(config: Settings, reuse_port: bool = False) -> int:
    """Run one web process until it is told to stop; its exit status."""
    try:
        sockets = bind_sockets(config.port, reuse_port=reuse_port, backlog=LISTEN_BACKLOG)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main(config, sockets))
    except ConfigurationError as e:  # WS_TRANSPORT=fast on a Tornado it does not fit
        print(f"notifier: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"notifier: cannot serve on port {config.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
