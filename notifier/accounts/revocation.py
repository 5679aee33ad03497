"""Revoking tokens: a per-user token version, in the user document and cached in Redis.

Every token carries the version its user had when it was issued (`ver`). Logging out,
changing the password or losing the admin role bumps the version, which revokes every
token issued before. Each request compares its token's version with the cached one: a
Redis GET, and a MongoDB read only when Redis does not hold the user's version (after a
Redis restart, or the first request after an hour), never one per request.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

CACHE_SECONDS = 3600
GONE = -1  # a deleted user: no token of theirs is current


def _key(user_id: str) -> str:
    return f"notifier:token-version:{user_id}"


def _oid(user_id: str) -> ObjectId | None:
    try:
        return ObjectId(user_id)
    except (InvalidId, TypeError):
        return None


class TokenVersions:
    """Current token versions for the web process (asyncio clients)."""

    def __init__(self, db: AsyncDatabase[Any], client: aioredis.Redis) -> None:
        self._users = db.users
        self._redis = client

    async def current(self, user_id: str) -> int:
        """The user's token version now (GONE for a user that no longer exists).

        Raises RedisError/OSError when Redis is down: the caller decides what that means.
        """
        cached = await self._redis.get(_key(user_id))
        if cached is not None:
            return int(cached)
        oid = _oid(user_id)
        user = await self._users.find_one({"_id": oid}, {"token_version": 1}) if oid else None
        version = int(user.get("token_version", 0)) if user else GONE
        # NX: a revocation that raced this read has already written the newer version.
        if not await self._redis.set(_key(user_id), version, ex=CACHE_SECONDS, nx=True):
            cached = await self._redis.get(_key(user_id))
            return int(cached) if cached is not None else version
        return version

    async def revoke(self, user_id: str) -> int:
        """Revoke every token issued to the user until now; the new version."""
        user = await self._users.find_one_and_update(
            {"_id": _oid(user_id)},
            {"$inc": {"token_version": 1}},
            projection={"token_version": 1},
            return_document=ReturnDocument.AFTER,
        )
        version = int(user["token_version"]) if user else GONE
        await self._redis.set(_key(user_id), version, ex=CACHE_SECONDS)
        return version


def revoke_sync(db: Database[Any], client: redis.Redis, user_id: str) -> int:
    """The same revocation from a synchronous process (the CLI)."""
    user = db.users.find_one_and_update(
        {"_id": _oid(user_id)},
        {"$inc": {"token_version": 1}},
        projection={"token_version": 1},
        return_document=ReturnDocument.AFTER,
    )
    version = int(user["token_version"]) if user else GONE
    client.set(_key(user_id), version, ex=CACHE_SECONDS)
    return version
