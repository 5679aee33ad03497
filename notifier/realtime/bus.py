"""The Redis pub/sub bus between workers and web processes: the fast path, at most once.

Each user's events go on the user's own channel, so only the web processes that hold
one of the user's sockets receive them (notifier/realtime/subscriber.py subscribes a
process to a user's channel while it holds the user). Announcements, the one event that
concerns every socket, go on the shared BROADCAST channel.

On one Redis server the bus is PUBLISH/SUBSCRIBE on REDIS_URL. With REDIS_CLUSTER_URL
it is sharded pub/sub (SPUBLISH/SSUBSCRIBE) on that Redis Cluster: a channel lives on the
one shard that owns its slot, so the user channels spread over every shard. A user
channel carries a group hash tag (`{g17}`): the channels of a group share a slot, so one
SSUBSCRIBE command can name many of them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from notifier.realtime.events import AnnouncementEvent, Event, decode, encode
from notifier.settings import Settings

__all__ = ["BROADCAST", "Event", "decode", "encode", "user_channel"]

BROADCAST = "notifier:events"  # announcements: every web process listens
USER_GROUPS = 256  # hash-tag groups of user channels (a group is one slot on a cluster)


AsyncBusClient = aioredis.Redis | AsyncRedisCluster


def user_group(user_id: str) -> int:
    """The hash-tag group of a user's channel (stable across processes and restarts)."""
    return zlib.crc32(user_id.encode()) % USER_GROUPS


def user_channel(user_id: str) -> str:
    """The channel of one user's events."""
    return f"notifier:u:{{g{user_group(user_id)}}}:{user_id}"


def channel_for(event: Event) -> str:
    """Where an event is published: its user's channel, or BROADCAST for announcements."""
    if isinstance(event, AnnouncementEvent):
        return BROADCAST
    return user_channel(event.user_id)


class Publisher:
    """Publishes events from workers (synchronous client: a Redis, or a RedisCluster)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self._redis = client

    def publish(self, event: Event) -> int:
        """Publish one event; returns how many web processes received it."""
        if isinstance(self._redis, RedisCluster):
            return int(self._redis.spublish(channel_for(event), encode(event)))
        return int(self._redis.publish(channel_for(event), encode(event)))

    def publish_many(self, events: Sequence[Event]) -> None:
        """Publish events in one round trip (a pipeline; per shard on a cluster).

        A user's events stay in order: they share a channel, so a shard, and a pipeline
        sends each shard's commands in order.
        """
        with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                if isinstance(self._redis, RedisCluster):
                    pipe.spublish(channel_for(event), encode(event))
                else:
                    pipe.publish(channel_for(event), encode(event))
            pipe.execute()


def make_publisher(settings: Settings, client: redis.Redis | None = None) -> Publisher:
    """A publisher on the bus the settings name (for workers and the CLI).

    Without a cluster it publishes through `client` when given (else a new client).
    """
    if settings.redis_cluster_url:
        return Publisher(RedisCluster.from_url(settings.redis_cluster_url))
    return Publisher(client or redis.Redis.from_url(settings.redis_url))


def async_client(settings: Settings, client: aioredis.Redis) -> AsyncBusClient:
    """The web process's client for publishing: the cluster's, or `client` (REDIS_URL's)."""
    if settings.redis_cluster_url:
        return AsyncRedisCluster.from_url(settings.redis_cluster_url)
    return client


async def publish_async(client: AsyncBusClient, event: Event) -> int:
    """Publish one event from a web process."""
    if isinstance(client, AsyncRedisCluster):
        return int(await client.spublish(channel_for(event), encode(event)))
    return int(await client.publish(channel_for(event), encode(event)))
