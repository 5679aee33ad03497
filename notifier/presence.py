"""Who has a live socket on any web process: a Redis hash per user, kept by heartbeats.

Each web process writes `process -> expires_at` into `notifier:presence:<user>` for the
users it holds and refreshes it every few seconds; when a user's last socket there
closes, the entry is kept LINGER seconds more, for a page that is only reconnecting. An
entry whose time has passed does not count, so a crashed process leaves nobody online
for longer than TTL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

KEY = "notifier:presence:{}"
# Each web process's connection figures (JSON by process), refreshed every few seconds.
STATS_KEY = "notifier:stats"
STATS_STALE_AFTER = 15.0
TTL = 60.0
LINGER = 15.0  # after the last socket closes: a tab that is only reconnecting stays online


class Presence:
    """This web process's side: arrivals, departures and heartbeats (asyncio client)."""

    def __init__(self, client: aioredis.Redis, process: str) -> None:
        self._redis = client
        self._process = process

    async def here(self, user_ids: Iterable[str]) -> None:
        """Mark the users as online on this process for the next TTL seconds."""
        expires = time.time() + TTL
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hset(KEY.format(user_id), self._process, expires)
                pipe.expire(KEY.format(user_id), int(TTL))
            await pipe.execute()

    async def gone(self, user_id: str) -> None:
        """The user's last socket on this process closed: online for LINGER seconds more."""
        await self._redis.hset(KEY.format(user_id), self._process, time.time() + LINGER)


def is_online(client: redis.Redis, user_id: str) -> bool:
    """Whether the user has a live socket on any web process (workers, synchronous)."""
    now = time.time()
    entries = client.hvals(KEY.format(user_id))
    return any(float(expires) > now for expires in entries)
