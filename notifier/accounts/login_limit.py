"""Failed logins per account and per address, counted in Redis."""

from __future__ import annotations

import redis.asyncio as aioredis


class LoginLimit:
    """Failed logins per account and per address in a fixed window (asyncio client)."""

    WINDOW = 15 * 60

    def __init__(self, client: aioredis.Redis, per_account: int, per_address: int) -> None:
        self._redis = client
        self._limits = {"account": per_account, "address": per_address}

    def _keys(self, username: str, address: str) -> dict[str, str]:
        return {
            "account": f"notifier:login:account:{username.casefold()}",
            "address": f"notifier:login:address:{address}",
        }

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
