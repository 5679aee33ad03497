"""Browsers' push subscriptions: what `PushSubscription.toJSON()` gives, checked and stored.

One document per endpoint in `push_subscriptions` (the endpoint is unique: a browser
that a second user subscribes moves to that user), at most MAX_PER_USER per user (the
least recently registered is dropped). Each remembers the user's token version when it
was registered: a logout (or a password or role change) revokes every token issued
before it, and the subscriptions registered under them stop receiving pushes too (the
page registers its browser again after the next login, when its user had opted in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from notifier import validation
from notifier.errors import InputError
from notifier.push import endpoints
from notifier.vapid import unb64url

COLLECTION = "push_subscriptions"
MAX_PER_USER = 10
P256DH_BYTES = 65  # an uncompressed P-256 point
AUTH_BYTES = 16


Base64url = Annotated[str, validation.must("must be base64url text")]


class PushKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The keys a push is encrypted for."""

    p256dh: Annotated[Base64url, msgspec.Meta(description="base64url, 65 bytes")]
    auth: Annotated[Base64url, msgspec.Meta(description="base64url, 16 bytes")]


class PushSubscription(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The browser's PushSubscription.toJSON() (POST /api/push-subscriptions)."""

    endpoint: Annotated[
        str,
        validation.must(
            "must be a URL",
            code=endpoints.UnsafeEndpoint.code,
            extra_json_schema={"minLength": 1, "maxLength": endpoints.MAX_ENDPOINT},
            description="an https URL on a public address (development also takes "
            "http and https on loopback)",
        ),
    ]
    keys: PushKeys
    expirationTime: (
        Annotated[int, validation.must("must be null or a time in milliseconds")] | None
    ) = None


class PushRemoval(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One subscription of the caller's (`endpoint`), or all of them (`all: true`)."""

    endpoint: Annotated[str, validation.must("must be a URL", min_length=1)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    all: Annotated[bool, validation.must("must be true", extra_json_schema={"const": True})] | (
        msgspec.UnsetType
    ) = msgspec.UNSET

    @classmethod
    def parse(cls, body: object) -> str | None:
        """The endpoint to remove, or None for every one."""
        given = validation.decode(cls, body)
        if given.all is True and given.endpoint is msgspec.UNSET:
            return None
        if given.all is not msgspec.UNSET or given.endpoint is msgspec.UNSET:
            raise InputError('give {"endpoint": url} or {"all": true}')
        if len(given.endpoint) > endpoints.MAX_ENDPOINT:
            raise InputError(f"endpoint must be at most {endpoints.MAX_ENDPOINT} characters")
        return validation.storable(given.endpoint, "endpoint")


@dataclass(frozen=True)
class Subscription:
    """A browser's push subscription: where to POST, and the keys to encrypt for."""

    endpoint: str
    p256dh: str
    auth: str

    @classmethod
    def parse(cls, body: object, allow_loopback: bool) -> Subscription:
        """Read `PushSubscription.toJSON()`; InputError naming what is wrong.

        The endpoint's form is checked here; its addresses by the caller (they need a
        name lookup, which the web process makes without blocking its loop).
        """
        given = validation.decode(PushSubscription, body)
        endpoint = endpoints.parse(given.endpoint, allow_loopback).url
        p256dh = _key(given.keys.p256dh, "keys.p256dh", P256DH_BYTES)
        # Imported here, at the first subscription: a web process without any pays no 9 MB.
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(p256dh))
        except ValueError:
            raise InputError("keys.p256dh must be a P-256 public key") from None
        auth = _key(given.keys.auth, "keys.auth", AUTH_BYTES)
        return cls(endpoint, p256dh, auth)

    def info(self) -> dict[str, Any]:
        """As pywebpush takes it (the browser's own shape)."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Subscription:
        """A stored subscription."""
        return cls(doc["endpoint"], doc["p256dh"], doc["auth"])


def _key(value: object, name: str, size: int) -> str:
    if not isinstance(value, str) or len(value) > 2 * size:
        raise InputError(f"{name} must be base64url text")
    try:
        raw = unb64url(value)
    except ValueError:
        raise InputError(f"{name} must be base64url text") from None
    if len(raw) != size:
        raise InputError(f"{name} must be {size} bytes")
    return value.rstrip("=")


class SubscriptionRepository:
    """Subscriptions as the web process stores them (asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._subs = db[COLLECTION]

    async def add(self, user_id: str, sub: Subscription, token_version: int) -> None:
        """Store (or refresh) a subscription for the user; keep their newest MAX_PER_USER."""
        now = datetime.now(UTC)
        update = {
            "$set": {
                "user_id": user_id,
                "p256dh": sub.p256dh,
                "auth": sub.auth,
                "token_version": token_version,
                "updated_at": now,
            },
            "$setOnInsert": {"created_at": now},
        }
        try:
            await self._subs.update_one({"endpoint": sub.endpoint}, update, upsert=True)
        except DuplicateKeyError:  # the same endpoint registered twice at once: update it
            await self._subs.update_one({"endpoint": sub.endpoint}, update)
        older = self._subs.find({"user_id": user_id}, {"_id": 1})
        dropped = [d["_id"] async for d in older.sort("updated_at", DESCENDING).skip(MAX_PER_USER)]
        if dropped:
            await self._subs.delete_many({"_id": {"$in": dropped}})

    async def remove(self, user_id: str, endpoint: str | None) -> int:
        """Remove the user's subscription at this endpoint (every one, for None)."""
        query: dict[str, Any] = {"user_id": user_id}
        if endpoint is not None:
            query["endpoint"] = endpoint
        return (await self._subs.delete_many(query)).deleted_count

    async def count(self, user_id: str) -> int:
        """How many browsers the user has subscribed (at most MAX_PER_USER)."""
        return await self._subs.count_documents({"user_id": user_id})
