"""At most N sockets per user across every web process, tracked in Redis."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

KEY = "notifier:sockets:{}"
TTL = 24 * 3600  # a user with no socket activity for a day has their set dropped


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

    async def closed(self, user_id: str, socket_id: str) -> None:
        """Forget a socket."""
        await self._redis.zrem(KEY.format(user_id), socket_id)
