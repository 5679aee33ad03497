"""Users: shoppers and admins, with scrypt password hashes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from notifier.accounts.auth import hash_password, verify_password
from notifier.storage.writes import Upsert

ROLES = ("shopper", "admin")


def create_user(
    username: str, password: str, role: str = "shopper", email: str | None = None
) -> Upsert:
    """The write that creates a user once; an existing user is left as it is."""
    assert role in ROLES
    return Upsert(
        "users",
        {"username": username},
        {
            "$setOnInsert": {
                "password_hash": hash_password(password),
                "role": role,
                "email": email,
                # Announcements from before a user existed are not news to them.
                "announcements_seen_at": datetime.now(UTC),
                "created_at": datetime.now(UTC),
            }
        },
    )


class UserRepository:
    """Users in MongoDB (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._users = db.users

    async def authenticate(self, username: str, password: str) -> dict[str, Any] | None:
        """The user when the password is right, else None (in about the same time)."""
        user = await self._users.find_one({"username": username})
        stored = user["password_hash"] if user else None
        # scrypt takes tens of milliseconds: keep it off the event loop.
        ok = await asyncio.to_thread(verify_password, password, stored)
        return user if ok else None

    async def by_id(self, user_id: str) -> dict[str, Any] | None:
        """The user with this id, or None."""
        try:
            return await self._users.find_one({"_id": ObjectId(user_id)})
        except InvalidId:
            return None
