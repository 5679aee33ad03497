"""At most N sockets per user across every web process, tracked in Redis.

A user's sockets are a sorted set (socket id -> opened at) under `notifier:sockets:<user>`.
A socket's arrival also writes the user's presence entry (notifier/realtime/presence.py),
in the same script, so a connect costs one Redis round trip.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from notifier.realtime import presence

KEY = "notifier:sockets:{}"
TTL = 24 * 3600  # a user with no socket activity for a day has their set dropped
# KEYS: sockets, presence. ARGV: socket id, now, sockets TTL, per-user limit, process,
# presence expires_at, presence TTL. Returns the evicted socket ids (oldest first).
_ARRIVED = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local over = redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
if #over > 0 then
  redis.call('ZREM', KEYS[1], unpack(over))
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return over
"""
# KEYS: sockets, presence. ARGV: socket id, process, presence expires_at ('' to leave it).
_LEFT = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
"""


class SocketLimit:
    """Which sockets a user holds everywhere; opening one too many evicts the oldest."""

    def __init__(self, client: aioredis.Redis, per_user: int) -> None:
        self._redis = client
        self.per_user = per_user

    async def opened(self, user_id: str, socket_id: str) -> list[str]:
        """Record a new socket; returns the ids of the oldest ones now over the limit."""
        key = KEY.format(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {socket_id: time.time()})
            pipe.expire(key, TTL)
            pipe.zrange(key, 0, -self.per_user - 1)  # all but the newest per_user
            _, _, over = await pipe.execute()
        evicted = [m.decode() if isinstance(m, bytes) else str(m) for m in over]
        if evicted:
            await self._redis.zrem(key, *evicted)
        return evicted

    async def arrived(self, user_id: str, socket_id: str, process: str) -> list[str]:
        """Record a new socket and the user's presence on `process`, in one round trip.

        Returns the ids of the oldest sockets now over the limit (already forgotten here;
        the caller closes them).
        """
        script = self._redis.register_script(_ARRIVED)  # evalsha; loads it on NOSCRIPT
        now = time.time()
        keys = [KEY.format(user_id), presence.KEY.format(user_id)]
        expires, ttl = now + presence.TTL, int(presence.TTL)
        args: list[str | float] = [socket_id, now, TTL, self.per_user, process, expires, ttl]
        over = await script(keys=keys, args=args)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in over]

    async def left(self, user_id: str, socket_id: str, process: str, last_here: bool) -> None:
        """Forget a socket; when it was the user's last on `process`, linger there (one trip)."""
        script = self._redis.register_script(_LEFT)
        keys = [KEY.format(user_id), presence.KEY.format(user_id)]
        linger = str(time.time() + presence.LINGER) if last_here else ""
        await script(keys=keys, args=[socket_id, process, linger])

    async def closed(self, user_id: str, socket_id: str) -> None:
        """Forget a socket."""
        await self._redis.zrem(KEY.format(user_id), socket_id)
