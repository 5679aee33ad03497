"""Revoking tokens: a per-user token version, in the user document and cached in Redis.

Every token carries the version its user had when it was issued (`ver`). Logging out,
changing the password or losing the admin role bumps the version, which revokes every
token issued before. Each request compares its token's version with the cached one: a
Redis GET, and a MongoDB read only when Redis does not hold the user's version (after a
Redis restart, or the first request after an hour), never one per request.

A revocation that cannot reach Redis must not leave the old version cached there (a
Redis that comes back with its data would accept the revoked tokens for up to an hour).
So the bump marks the user `token_version_uncached` in the same write, and the mark is
cleared only once Redis holds the new version; `sync_uncached` copies what is still
marked (the beat runs it, and each web process when it joins the bus again). Sockets of
a revoked token are closed by the logout event, or, if that was lost with the bus, by
the web process comparing them with the current versions when it joins the bus again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier.storage.batches import batched
from notifier.storage.plans import Eval, Find, FindOneAndUpdate, Plan, UpdateOne, run, run_async

CACHE_SECONDS = 3600
GONE = -1  # a deleted user: no token of theirs is current
UNCACHED = "token_version_uncached"  # on a user whose new version Redis may not hold yet
CACHE_BATCH = 1000  # users per MGET
# Versions only grow, and so does the cached one: a sweep that read a version before a
# later revocation cached a newer one must not put the older one back.
RAISE = """
local cached = redis.call('GET', KEYS[1])
if cached and tonumber(cached) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
BUMP = {"$inc": {"token_version": 1}, "$set": {UNCACHED: True}}


def key(user_id: str) -> str:
    return f"notifier:token-version:{user_id}"


def _oid(user_id: str) -> ObjectId | None:
    try:
        return ObjectId(user_id)
    except (InvalidId, TypeError):
        return None


class TokenVersions:
    """Current token versions for the web process (asyncio clients)."""

    def __init__(self, db: AsyncDatabase[Any], client: aioredis.Redis) -> None:
        self._db = db
        self._users = db.users
        self._redis = client

    async def current(self, user_id: str) -> int:
        """The user's token version now (GONE for a user that no longer exists).

        Raises RedisError/OSError when Redis is down: the caller decides what that means.
        """
        cached = await self._redis.get(key(user_id))
        if cached is not None:
            return int(cached)
        oid = _oid(user_id)
        user = await self._users.find_one({"_id": oid}, {"token_version": 1}) if oid else None
        version = int(user.get("token_version", 0)) if user else GONE
        # NX: a revocation that raced this read has already written the newer version.
        if not await self._redis.set(key(user_id), version, ex=CACHE_SECONDS, nx=True):
            cached = await self._redis.get(key(user_id))
            return int(cached) if cached is not None else version
        return version

    async def revoke(self, user_id: str) -> int:
        """Revoke every token issued to the user until now; the new version.

        Stored in MongoDB first; raises RedisError/OSError when Redis could not be told,
        and the version stays marked for `sync_uncached`.
        """
        return await run_async(_revoke(user_id), self._db, self._redis)

    async def current_many(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Each user's version now, as `current` answers it, for many users at once.

        The cached versions in one MGET per thousand users; those Redis does not hold
        (after it lost its data) from MongoDB a hundred at a time, then cached.
        """
        versions: dict[str, int] = {}
        missing: list[str] = []
        for batch in batched(sorted(set(user_ids)), CACHE_BATCH):
            cached_versions = await self._redis.mget([key(u) for u in batch])
            for user_id, cached in zip(batch, cached_versions, strict=True):
                if cached is None:
                    missing.append(user_id)
                else:
                    versions[user_id] = int(cached)
        stored = {u: GONE for u in missing}
        oids = [oid for u in missing if (oid := _oid(u)) is not None]
        for some in batched(oids):
            async for user in self._users.find({"_id": {"$in": some}}, {"token_version": 1}):
                stored[str(user["_id"])] = int(user.get("token_version", 0))
        if stored:
            pipe = self._redis.pipeline(transaction=False)
            for user_id, version in stored.items():
                pipe.set(key(user_id), version, ex=CACHE_SECONDS, nx=True)
            await pipe.execute()
        return {**versions, **stored}

    async def sync_uncached(self) -> int:
        """Give Redis the versions it may have missed; returns how many."""
        return await run_async(_sync_uncached(), self._db, self._redis)


def revoke_sync(db: Database[Any], client: redis.Redis, user_id: str) -> int:
    """`TokenVersions.revoke` for a synchronous process (the CLI)."""
    return run(_revoke(user_id), db, client)


def sync_uncached_sync(db: Database[Any], client: redis.Redis) -> int:
    """`TokenVersions.sync_uncached` for a synchronous process (the beat's sweep)."""
    return run(_sync_uncached(), db, client)


def _revoke(user_id: str) -> Plan[int]:
    """Bump the version (MongoDB first, marked uncached), then cache it and clear the mark."""
    user = yield FindOneAndUpdate("users", {"_id": _oid(user_id)}, BUMP, {"token_version": 1})
    if user is None:
        return GONE
    version = int(user["token_version"])
    yield from _cache(user["_id"], version)
    return version


def _sync_uncached() -> Plan[int]:
    """Cache the version of every user still marked; returns how many."""
    marked = yield Find("users", {UNCACHED: True}, {"token_version": 1})
    for user in marked:
        yield from _cache(user["_id"], int(user.get("token_version", 0)))
    return len(marked)


def _cache(oid: ObjectId, version: int) -> Plan[None]:
    """Raise Redis's copy to `version`, then clear the mark, unless a later revocation bumped
    the version again (it keeps its own mark)."""
    yield Eval(RAISE, (key(str(oid)),), (version, CACHE_SECONDS))
    yield UpdateOne("users", {"_id": oid, "token_version": version}, {"$unset": {UNCACHED: ""}})
