"""`python -m web`: one web process (HTTP, JSON API and /ws) on $PORT."""

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

from notifier import logs
from notifier.realtime import bus
from notifier.realtime.delivery import SERVICE_RESTART
from notifier.realtime.fanout import FanOut
from notifier.realtime.registry import ConnectionRegistry
from notifier.settings import ConfigurationError, Settings
from notifier.storage.schema import ensure_indexes_async
from web import lean, stats
from web.app import make_app, mongo_client, on_bus_joined
from web.frames import check_iostream
from web.server import NotifierHTTPServer

log = logging.getLogger("web")

SHUTDOWN_GRACE = 5.0
REDIS_CONNECTIONS = 100


async def main(config: Settings) -> None:
    """Build clients on this loop, serve until SIGTERM or SIGINT, then close cleanly.

    Raises bus.LibraryChanged, before serving or from the subscriber, when a pinned
    library lost a private API the fast path uses.
    """
    check_private_apis()
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
    lean.lazy_stream_buffers()  # raises at start if this Tornado is not the one it knows
    # What start-up built lives as long as the process: keep it out of every collection,
    # so a full one (a pause of 100 ms and more in a storm of connects) walks less.
    gc.collect()
    gc.freeze()
    server = NotifierHTTPServer(
        app,
        trusted_proxies=config.trusted_proxies,
        header_timeout=config.header_timeout,
        idle_timeout=config.idle_timeout,
        connections_per_address=config.connections_per_address,
    )
    server.listen(config.port)
    fanout = FanOut(registry, app.settings["announcements"])
    listener = asyncio.create_task(
        bus.listen(
            bus_client,
            fanout,
            on_bus_joined(app, fanout),
            state=app.settings["subscription"],
            after_batch=fanout.flush,
        )
    )
    background = [listener, asyncio.create_task(stats.report(redis, process, registry))]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not config.push_enabled:
        log.warning(
            "Web Push is off: set VAPID_PRIVATE_KEY and VAPID_SUBJECT "
            "(`python -m notifier vapid-keys` prints a key pair)"
        )
    log.info("notifier web listening on port %d", config.port)
    stopping = asyncio.create_task(stop.wait())
    # The subscriber only ends by failing (LibraryChanged): then the process stops too.
    await asyncio.wait([stopping, listener], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failure = listener.exception() if listener.done() else None
    if failure is not None:
        log.error("stopping: %s", failure)

    log.info("shutting down: closing %d socket(s)", registry.stats()["connections"])
    server.stop()
    registry.close_all(SERVICE_RESTART, "server restarting")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE)
    await stop_tasks(background, SHUTDOWN_GRACE)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.settings["seen_marks"].flush(), SHUTDOWN_GRACE)
    if bus_client is not redis:
        await bus_client.aclose()
    await redis.aclose()
    await mongo.close()
    if failure is not None:
        raise failure


def check_private_apis() -> None:
    """Fail at start, not later, when a pinned library lost what the fast path reads."""
    bus.check_redis_connection()
    check_iostream()


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


def run() -> None:
    """Entry point: read settings, then serve."""
    try:
        config = Settings.from_env()
    except ConfigurationError as e:
        sys.exit(f"notifier: {e}")
    logs.configure(config.production)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main(config))
    except bus.LibraryChanged as e:
        sys.exit(f"notifier: {e}")
    except OSError as e:
        sys.exit(f"notifier: cannot serve on port {config.port}: {e.strerror or e}")


if __name__ == "__main__":
    run()
