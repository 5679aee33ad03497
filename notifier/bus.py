"""The Redis pub/sub bus between workers and web processes: the fast path, at most once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL = "notifier:events"
READ_SIZE = 256 * 1024


def encode(event: dict[str, Any]) -> str:
    """An event as the compact JSON text published on the channel."""
    return json.dumps(event, separators=(",", ":"))


def decode(raw: bytes | str) -> dict[str, Any] | None:
    """The event in a channel message, or None when it is not one of ours."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("kind"), str) else None


class Publisher:
    """Publishes events from workers (synchronous client)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def publish(self, event: dict[str, Any]) -> int:
        """Publish one event; returns how many web processes received it."""
        return int(self._redis.publish(CHANNEL, encode(event)))


async def publish_async(client: aioredis.Redis, event: dict[str, Any]) -> int:
    """Publish one event from a web process."""
    return int(await client.publish(CHANNEL, encode(event)))


async def listen(
    client: aioredis.Redis,
    handle: Callable[[dict[str, Any]], None],
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
    ping_every: float = 5.0,
    dead_after: float = 15.0,
    max_backoff: float = 5.0,
) -> None:
    """Feed every event on the channel to `handle`, resubscribing with backoff after failures.

    Runs until cancelled. `on_subscribed` runs after each (re)subscription, so the caller
    can fill from storage whatever was published while it was away. A subscription that
    stops answering PINGs (a half-open connection) counts as lost.
    """
    loop = asyncio.get_running_loop()
    backoff = 0.1
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            heard = loop.time()
            next_ping = heard + ping_every
            subscribed = False
            # Replies are parsed straight off the subscription's socket, a read at a time:
            # PubSub.get_message adds a timeout, a health check, a retry wrapper and a dict
            # per message, which cost more than delivering the message. redis-py only sends
            # on this connection from here on (pings included), so nothing else reads it.
            stream = _stream_of(pubsub)
            replies = hiredis.Reader()
            while True:
                try:
                    async with asyncio.timeout(min(1.0, ping_every)):
                        data = await stream.read(READ_SIZE)
                except TimeoutError:
                    data = None
                now = loop.time()
                if data == b"":
                    raise redis.ConnectionError("Redis closed the subscription")
                if data:
                    heard = now
                    replies.feed(data)
                    while (reply := replies.gets()) is not False:
                        # [b"message", channel, data], [b"subscribe", channel, n], [b"pong", b""]
                        if not isinstance(reply, list):
                            continue
                        if reply[0] == b"message":
                            _dispatch(handle, reply[2])
                        elif reply[0] == b"subscribe" and not subscribed:
                            subscribed, backoff = True, 0.1
                            if on_subscribed is not None:
                                await on_subscribed()
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + ping_every
                if now - heard > dead_after:
                    raise redis.ConnectionError(f"no answer from Redis for {dead_after:.0f}s")
        except (redis.RedisError, OSError) as e:
            log.warning("redis subscription lost (%s); retrying in %.1fs", e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
        finally:
            try:
                await pubsub.aclose()
            except (redis.RedisError, OSError):
                pass


def _stream_of(pubsub: Any) -> asyncio.StreamReader:
    """The socket under a subscription (redis-py keeps it as its connection's `_reader`)."""
    conn = pubsub.connection
    stream = getattr(conn, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        raise redis.ConnectionError("the subscription has no open connection")
    return stream


def _dispatch(handle: Callable[[dict[str, Any]], None], raw: bytes | str) -> None:
    event = decode(raw)
    if event is None:
        log.warning("ignored a malformed event on %s", CHANNEL)
        return
    try:
        handle(event)
    except Exception:
        log.exception("handling a %s event failed", event.get("kind"))
