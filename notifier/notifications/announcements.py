"""System announcements: stored, broadcast live, and shown on connect to who missed them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError
from notifier.formatting import iso

SEVERITIES = ("info", "warning", "critical")
CATCH_UP = timedelta(hours=24)  # how far back a returning user is shown what they missed


def to_json(doc: dict[str, Any]) -> dict[str, Any]:
    """An announcement as sockets carry it (a system-message)."""
    return {
        "id": str(doc["_id"]),
        "message": doc["message"],
        "severity": doc["severity"],
        "created_at": iso(doc["created_at"]),
    }


class AnnouncementRepository:
    """Announcements and who has seen up to when (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._db = db

    async def create(self, body: object) -> dict[str, Any]:
        """Store an announcement from a JSON body; InputError when it is not one."""
        b = validation.body_object(body, ("message", "severity"))
        message = validation.text(b, "message", 500)
        severity = b.get("severity", "info")
        if severity not in SEVERITIES:
            raise InputError("severity must be info, warning or critical")
        doc = {"message": message, "severity": severity, "created_at": datetime.now(UTC)}
        await self._db.announcements.insert_one(doc)
        return to_json(doc)

    async def missed_by(self, user_id: str) -> list[dict[str, Any]]:
        """What the user has not seen of the last 24 hours, oldest first; marks it seen."""
        now = datetime.now(UTC)
        try:
            oid = ObjectId(user_id)
        except InvalidId:
            return []
        user = await self._db.users.find_one({"_id": oid}, {"announcements_seen_at": 1})
        since = now - CATCH_UP
        seen = (user or {}).get("announcements_seen_at")
        if seen is not None:
            since = max(since, seen.replace(tzinfo=UTC))
        cursor = self._db.announcements.find({"created_at": {"$gt": since, "$lte": now}})
        missed = [to_json(d) async for d in cursor.sort("created_at", 1)]
        await self.mark_seen(user_id, now)
        return missed

    async def mark_seen(self, user_id: str, until: datetime | None = None) -> None:
        """The user has seen every announcement up to `until` (default: now)."""
        try:
            oid = ObjectId(user_id)
        except InvalidId:
            return
        until = until or datetime.now(UTC)
        await self._db.users.update_one({"_id": oid}, {"$max": {"announcements_seen_at": until}})
