"""Who has a live socket on any web process: a Redis hash per user, kept by heartbeats.

Each web process writes `process -> expires_at` into `notifier:presence:<user>` for the
users it holds and refreshes it every few seconds; when a user's last socket there
closes, the entry is kept LINGER seconds more, for a page that is only reconnecting. An
entry whose time has passed does not count, so a crashed process leaves nobody online
for longer than TTL.

Beside the hashes, `notifier:online` ranks every user by the latest time any process
said they are here until. It is a list of candidates (a user who left can stay on it up
to TTL; the hashes decide), and it lets a deal check find an item's online watchers
without reading every watcher first (`online_now`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

KEY = "notifier:presence:{}"
ONLINE_KEY = "notifier:online"  # user -> the latest expires_at any process wrote: candidates
# Each web process's connection figures (JSON by process), refreshed every few seconds.
STATS_KEY = "notifier:stats"
STATS_STALE_AFTER = 15.0
TTL = 60.0
LINGER = 15.0  # after the last socket closes: a tab that is only reconnecting stays online
ONLINE_BATCH = 1000  # users whose entries one pipeline reads
HERE_BATCH = 250  # users per heartbeat script (each holds Redis for a fraction of a ms)
# KEYS: the online set, then each user's presence. ARGV: process, expires_at, TTL, now,
# then the user ids (in the order of their keys).
_HERE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
  redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[i + 3])
end
"""


class Presence:
    """This web process's side: arrivals, departures and heartbeats (asyncio client)."""

    def __init__(self, client: aioredis.Redis, process: str) -> None:
        self._redis = client
        self._process = process

    async def here(self, user_ids: Iterable[str]) -> None:
        """Mark the users as online on this process for the next TTL seconds.

        One script call per HERE_BATCH users: a pipeline of two commands per user cost the
        web process about 15 us a user every heartbeat, and held its loop (and so every
        delivery) for a third of a second at 10,000 users.
        """
        users = list(user_ids)
        now = time.time()
        args = (self._process, now + TTL, int(TTL), now)
        for i in range(0, len(users), HERE_BATCH):
            batch = users[i : i + HERE_BATCH]
            keys = [ONLINE_KEY, *(KEY.format(user_id) for user_id in batch)]
            await self._redis.eval(_HERE, len(keys), *keys, *args, *batch)

    async def gone(self, user_id: str) -> None:
        """The user's last socket on this process closed: online for LINGER seconds more."""
        await self._redis.hset(KEY.format(user_id), self._process, time.time() + LINGER)


def is_online(client: redis.Redis, user_id: str) -> bool:
    """Whether the user has a live socket on any web process (workers, synchronous)."""
    return user_id in online_users(client, [user_id])


def online_users(client: redis.Redis, user_ids: list[str]) -> set[str]:
    """Which of the users have a live socket on any web process (one round trip)."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.hvals(KEY.format(user_id))
        entries = pipe.execute()
    return {u for u, e in zip(user_ids, entries, strict=True) if any(float(x) > now for x in e)}


def online_now(client: redis.Redis, at_most: int) -> list[str] | None:
    """Every user with a live socket on any web process (sorted), or None when more than
    `at_most` may be: the caller then asks `online_users` of the users it has instead.

    One round trip for the candidates, then one per ONLINE_BATCH of them for their entries.
    """
    now = time.time()
    found = client.zrangebyscore(ONLINE_KEY, now, "+inf", start=0, num=at_most + 1)
    if len(found) > at_most:
        return None
    candidates = [m.decode() for m in found if isinstance(m, bytes)]
    online: set[str] = set()
    for i in range(0, len(candidates), ONLINE_BATCH):
        online |= online_users(client, candidates[i : i + ONLINE_BATCH])
    return sorted(online)
