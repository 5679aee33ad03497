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


class LoginLimit:
    """Failed logins per account and per address in a fixed window (asyncio client)."""

    WINDOW = 15 * 60

    def __init__(self, client: aioredis.Redis, per_account: int, per_address: int) -> None:
        self._redis = client
        self._limits = {"account": per_account, "address": per_address}

    def _keys(self, username: str, address: str) -> dict[str, str]:
        return {"account": f"notifier:login:account:{username.casefold()}",
                "address": f"notifier:login:address:{address}"}  # fmt: skip

    async def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed, 0 when it is allowed now."""
        wait = 0
        for kind, key in self._keys(username, address).items():
            count = await self._redis.get(key)
            if count is not None and int(count) >= self._limits[kind]:
                wait = max(wait, int(await self._redis.ttl(key)), 1)
        return wait

    async def failed(self, username: str, address: str) -> None:
        """Count a failed attempt against the account and the address."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(username, address).values():
                pipe.incr(key)
                pipe.expire(key, self.WINDOW, nx=True)
            await pipe.execute()

    async def succeeded(self, username: str, address: str) -> None:
        """A good password clears the account's count (not the address's)."""
        await self._redis.delete(self._keys(username, address)["account"])
