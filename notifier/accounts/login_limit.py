"""Failed logins, counted in Redis: strictly per (account, address), loosely per account.

A strict count per account alone hands anyone a lockout: ten wrong passwords from
anywhere would lock the owner out. So the strict limit is per (account, address); an
address is also limited across accounts; and the account as a whole has a loose limit
(ten times the strict one): past it, only addresses with no recent failures on that
account may try. Keys are fixed-size digests, whatever the username sent.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

ACCOUNT_WIDE_FACTOR = 10


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:32]


class LoginLimit:
    """Failed logins in a fixed 15-minute window (asyncio client)."""

    WINDOW = 15 * 60

    def __init__(self, client: aioredis.Redis, per_account: int, per_address: int) -> None:
        self._redis = client
        self._limits = {
            "pair": per_account,
            "address": per_address,
            "account": per_account * ACCOUNT_WIDE_FACTOR,
        }

    def _keys(self, username: str, address: str) -> dict[str, str]:
        account = username.casefold()
        return {
            "pair": f"notifier:login:pair:{_digest(account, address)}",
            "address": f"notifier:login:address:{_digest(address)}",
            "account": f"notifier:login:account:{_digest(account)}",
        }

    async def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed, 0 when it is allowed now."""
        keys = self._keys(username, address)
        counts = dict(zip(keys, await self._redis.mget(list(keys.values())), strict=True))
        pair = int(counts["pair"] or 0)
        over = [
            kind for kind in ("pair", "address") if int(counts[kind] or 0) >= self._limits[kind]
        ]
        # Under attack from many addresses, an address that has not failed may still try.
        if int(counts["account"] or 0) >= self._limits["account"] and pair:
            over.append("account")
        wait = 0
        for kind in over:
            wait = max(wait, int(await self._redis.ttl(keys[kind])), 1)
        return wait

    async def failed(self, username: str, address: str) -> None:
        """Count a failed attempt against the pair, the address and the account."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(username, address).values():
                pipe.incr(key)
                pipe.expire(key, self.WINDOW, nx=True)
            await pipe.execute()

    async def succeeded(self, username: str, address: str) -> None:
        """A good password clears its pair's count (not the address's or the account's)."""
        await self._redis.delete(self._keys(username, address)["pair"])
