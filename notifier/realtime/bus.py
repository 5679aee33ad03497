"""The Redis pub/sub bus between workers and web processes: the fast path, at most once.

On one Redis server the bus is PUBLISH/SUBSCRIBE on REDIS_URL. With REDIS_CLUSTER_URL
it is sharded pub/sub (SPUBLISH/SSUBSCRIBE) on that Redis Cluster: the channel lives on
the one shard that owns its slot, instead of every message being broadcast to every node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import msgspec
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from notifier import metrics
from notifier.realtime.events import Event, decode, encode
from notifier.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "notifier:events"
READ_SIZE = 256 * 1024


class LibraryChanged(RuntimeError):
    """A private API of a pinned library that the fast path relies on is not there any more.

    Not a connection error: retrying cannot help, so the web process stops with this.
    """


AsyncBusClient = aioredis.Redis | AsyncRedisCluster


class Publisher:
    """Publishes events from workers (synchronous client: a Redis, or a RedisCluster)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self._redis = client

    def publish(self, event: Event) -> int:
        """Publish one event; returns how many web processes received it."""
        if isinstance(self._redis, RedisCluster):
            return int(self._redis.spublish(CHANNEL, encode(event)))
        return int(self._redis.publish(CHANNEL, encode(event)))

    def publish_many(self, events: Sequence[Event]) -> None:
        """Publish events in order, in one round trip (a pipeline) where the client allows."""
        if isinstance(self._redis, RedisCluster):
            for event in events:  # the channel's shard is one node: order is kept
                self._redis.spublish(CHANNEL, encode(event))
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(CHANNEL, encode(event))
            pipe.execute()


def make_publisher(settings: Settings, client: redis.Redis | None = None) -> Publisher:
    """A publisher on the bus the settings name (for workers and the CLI).

    Without a cluster it publishes through `client` when given (else a new client).
    """
    if settings.redis_cluster_url:
        return Publisher(RedisCluster.from_url(settings.redis_cluster_url))
    return Publisher(client or redis.Redis.from_url(settings.redis_url))


def async_client(settings: Settings, client: aioredis.Redis) -> AsyncBusClient:
    """The web process's client for the bus: the cluster's, or `client` (on REDIS_URL)."""
    if settings.redis_cluster_url:
        return AsyncRedisCluster.from_url(settings.redis_cluster_url)
    return client


async def publish_async(client: AsyncBusClient, event: Event) -> int:
    """Publish one event from a web process."""
    if isinstance(client, AsyncRedisCluster):
        return int(await client.spublish(CHANNEL, encode(event)))
    return int(await client.publish(CHANNEL, encode(event)))


@dataclass
class Subscription:
    """How a web process's subscription to the bus is doing (for /readyz).

    Written by `listen` and read by handlers, all on the same event loop.
    """

    subscribed: bool = False
    heard_at: float = 0.0  # loop time of the last word from Redis on the subscription
    times_subscribed: int = 0

    def live(self, now: float, dead_after: float = 15.0) -> bool:
        """Subscribed, and Redis answered on the subscription within `dead_after` seconds."""
        return self.subscribed and now - self.heard_at <= dead_after


Batch = list[tuple[str, Any]]  # the replies of one read: [(type, data)]
# receive(wait, on_batch): hand on_batch each batch that arrives within `wait` seconds,
# until the time is up or on_batch returns False.
Receive = Callable[[float, Callable[[Batch], bool]], Awaitable[None]]


async def listen(
    client: AsyncBusClient,
    handle: Callable[[Event], None],
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
    ping_every: float = 5.0,
    dead_after: float = 15.0,
    max_backoff: float = 5.0,
    state: Subscription | None = None,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Feed every event on the channel to `handle`, resubscribing with backoff after failures.

    Runs until cancelled. `after_batch` runs after the events of each read from the
    socket (a batch), so per-message bookkeeping can be done once per batch.
    `on_subscribed` runs after each (re)subscription, so the caller can fill from storage
    whatever was published while it was away. A subscription that stops answering PINGs
    (a half-open connection) counts as lost. `state` is kept up to date for readiness
    checks. Raises LibraryChanged when redis-py no longer has what the fast path reads.
    """
    state = state if state is not None else Subscription()
    loop = asyncio.get_running_loop()
    backoff = 0.1
    sharded = isinstance(client, AsyncRedisCluster)
    while True:
        pubsub = client.pubsub()
        try:
            if isinstance(client, AsyncRedisCluster):
                await client.initialize()  # learn the slots (a no-op once known)
            receive, ping = await _subscribe(pubsub, sharded)
            heard = loop.time()
            next_ping = heard + ping_every
            subscribed = confirmed = False  # subscribed: confirmed once on this connection

            def on_batch(batch: Batch) -> bool:
                nonlocal heard, confirmed
                heard = state.heard_at = loop.time()
                for kind, data in batch:
                    if kind in ("message", "smessage"):
                        _dispatch(handle, data)
                    elif kind in ("subscribe", "ssubscribe"):
                        confirmed = True
                if after_batch is not None:
                    after_batch()
                # Back to the loop below for a confirmation: on_subscribed awaits.
                return not confirmed

            while True:
                await receive(min(1.0, ping_every), on_batch)
                now = loop.time()
                if confirmed and not subscribed:
                    subscribed, confirmed, backoff = True, False, 0.1
                    state.subscribed = True
                    state.times_subscribed += 1
                    log.info("subscribed to %s", CHANNEL)
                    if state.times_subscribed > 1:
                        metrics.PUBSUB_RECONNECTS.inc()
                    if on_subscribed is not None:
                        await on_subscribed()
                if now >= next_ping:
                    await ping()
                    next_ping = now + ping_every
                if now - heard > dead_after:
                    raise redis.ConnectionError(f"no answer from Redis for {dead_after:.0f}s")
        except (redis.RedisError, OSError) as e:
            log.warning("redis subscription lost (%s); retrying in %.1fs", e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
        finally:
            state.subscribed = False
            try:
                await pubsub.aclose()
            except (redis.RedisError, OSError):
                pass


async def _subscribe(
    pubsub: aioredis.client.PubSub, sharded: bool
) -> tuple[Receive, Callable[[], Awaitable[Any]]]:
    """Subscribe; returns how to read what comes and how to PING."""
    if not sharded:
        await pubsub.subscribe(CHANNEL)
        return _socket_receiver(pubsub), pubsub.ping

    cluster_pubsub: Any = pubsub  # redis.asyncio.cluster.ClusterPubSub
    await cluster_pubsub.ssubscribe(CHANNEL)

    async def receive(wait: float, on_batch: Callable[[Batch], bool]) -> None:
        message = await cluster_pubsub.get_sharded_message(timeout=wait)
        if message is not None:
            on_batch([(message["type"], message["data"])])

    async def ping_shards() -> None:
        # The PONG comes back on the subscription's own connection to the shard.
        for node_pubsub in list(cluster_pubsub.node_pubsub_mapping.values()):
            await node_pubsub.ping()

    return receive, ping_shards


def subscription_stream(connection: object) -> asyncio.StreamReader:
    """The StreamReader redis-py reads a connected connection from (its private `_reader`).

    LibraryChanged when redis-py no longer keeps one there; ConnectionError when the
    connection is simply not open.
    """
    if not hasattr(connection, "_reader"):
        raise LibraryChanged(
            f"redis-py {redis.__version__}: a connection has no `_reader` (the bus reads "
            "its StreamReader directly; see notifier/realtime/bus.py)"
        )
    stream = connection._reader
    if stream is None:
        raise redis.ConnectionError("the subscription has no open connection")
    if not isinstance(stream, asyncio.StreamReader):
        raise LibraryChanged(
            f"redis-py {redis.__version__}: a connection's `_reader` is a "
            f"{type(stream).__name__}, not an asyncio.StreamReader"
        )
    return stream


def check_redis_connection() -> None:
    """At start: a redis-py connection still has the `_reader` the bus reads (no I/O)."""
    unopened = aioredis.connection.Connection()  # the class a connection pool makes
    if not hasattr(unopened, "_reader"):
        subscription_stream(unopened)  # raises LibraryChanged


def _socket_receiver(pubsub: aioredis.client.PubSub) -> Receive:
    """Replies parsed straight off the subscription's socket, a read at a time.

    PubSub.get_message adds a timeout, a health check, a retry wrapper and a dict per
    message, which cost more than delivering the message. redis-py only sends on this
    connection from here on (pings included), so nothing else reads it. One timeout
    covers every read within `wait` (not one per read): while events flow, a wakeup
    costs a read and a parse, and no timer is armed and cancelled for it.
    """
    stream = subscription_stream(pubsub.connection)
    replies = hiredis.Reader()

    async def receive(wait: float, on_batch: Callable[[Batch], bool]) -> None:
        try:
            async with asyncio.timeout(wait):
                while True:
                    data = await stream.read(READ_SIZE)
                    if not data:
                        raise redis.ConnectionError("Redis closed the subscription")
                    replies.feed(data)
                    batch: Batch = []
                    # [b"message", channel, data], [b"subscribe", channel, n]; the PONG is
                    # [b"pong", b""] in RESP2 and b"PONG" in RESP3: every reply is a sign of life.
                    while (reply := replies.gets()) is not False:
                        if isinstance(reply, list):
                            batch.append((reply[0].decode(), reply[-1]))
                        else:
                            batch.append(("reply", reply))
                    if batch and not on_batch(batch):
                        return
        except TimeoutError:
            return

    return receive


def _dispatch(handle: Callable[[Event], None], raw: bytes | str) -> None:
    try:
        event = decode(raw)
    except msgspec.DecodeError:
        log.warning("ignored a malformed event on %s", CHANNEL)
        return
    try:
        handle(event)
    except Exception:
        log.exception("handling a %s event failed", type(event).__name__)
