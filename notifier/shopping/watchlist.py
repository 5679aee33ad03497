"""Watchlists: the items a shopper wants to hear about, with an optional target price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError, NotFound
from notifier.storage.writes import Upsert, apply_async

MAX_ITEMS = 200
UNDO_COLLECTION = "watchlist_removed"
UNDO_SECONDS = 3600  # how long a removed watch can be put back (a TTL index)


class WatchInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An item to watch, and the price at or below which any store's price is news."""

    item_name: validation.Name
    target_price_in_cents: validation.Cents | None = None

    @classmethod
    def parse(cls, body: object) -> WatchInput:
        """Read a watch from a JSON body; raise InputError naming the bad field."""
        item = validation.decode(cls, body)
        name = validation.text(item.item_name, "item_name", validation.NAME_LENGTH)
        return msgspec.structs.replace(item, item_name=name)


def watch(user_id: str, item: WatchInput) -> Upsert:
    """The write that adds an item to a watchlist, or updates its target price."""
    return Upsert(
        "watchlists",
        {"user_id": user_id, "item_key": validation.item_key(item.item_name)},
        {
            "$set": {
                "item_name": item.item_name,
                "target_price_in_cents": item.target_price_in_cents,
            },
            "$setOnInsert": {"created_at": datetime.now(UTC)},
        },
    )


class WatchlistRepository:
    """A shopper's watchlist in MongoDB (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._watchlists = db.watchlists
        self._db = db

    async def items(self, user_id: str) -> list[dict[str, Any]]:
        """The watched items, in the order they were added."""
        cursor = self._watchlists.find({"user_id": user_id}).sort([("created_at", 1), ("_id", 1)])
        return [
            {"item_name": d["item_name"], "target_price_in_cents": d.get("target_price_in_cents")}
            async for d in cursor
        ]

    async def add(self, user_id: str, item: WatchInput) -> None:
        """Watch an item (idempotent: watching it again updates the target price)."""
        key = validation.item_key(item.item_name)
        if not await self._watchlists.find_one({"user_id": user_id, "item_key": key}):
            if await self._watchlists.count_documents({"user_id": user_id}) >= MAX_ITEMS:
                raise InputError(f"a watchlist holds at most {MAX_ITEMS} items", "watchlist_full")
        await apply_async(self._db, [watch(user_id, item)])

    async def remove(self, user_id: str, item_name: str) -> str:
        """Stop watching an item; NotFound when it was not watched.

        The watch is kept aside for UNDO_SECONDS (whatever fields it has: target, alert
        settings, when it was added), so an undo puts back exactly what was removed.
        Returns the key of what was kept (for `restore`).
        """
        removed = await self._watchlists.find_one_and_delete(
            {"user_id": user_id, "item_key": validation.item_key(item_name)}
        )
        if removed is None:
            raise NotFound(f"{item_name!r} is not on your watchlist")
        removed.pop("_id", None)
        undo_id = ObjectId()
        await self._db[UNDO_COLLECTION].insert_one(
            {"_id": undo_id, "user_id": user_id, "watch": removed, "removed_at": datetime.now(UTC)}
        )
        return str(undo_id)

    async def restore(self, user_id: str, undo_id: str) -> str:
        """Put back a watch removed less than UNDO_SECONDS ago; returns its item's name.

        NotFound when there is nothing to undo (too late, already undone, or not the
        user's); watching the item again meanwhile keeps the newer watch.
        """
        kept = None
        if ObjectId.is_valid(undo_id):
            kept = await self._db[UNDO_COLLECTION].find_one_and_delete(
                {"_id": ObjectId(undo_id), "user_id": user_id}
            )
        if kept is None:
            raise NotFound("there is nothing to undo")
        watch = kept["watch"]
        key = {"user_id": user_id, "item_key": watch["item_key"]}
        if not await self._watchlists.find_one(key, {"_id": 1}):
            if await self._watchlists.count_documents({"user_id": user_id}) >= MAX_ITEMS:
                raise InputError(f"a watchlist holds at most {MAX_ITEMS} items", "watchlist_full")
        fields = {k: v for k, v in watch.items() if k not in key}
        await self._watchlists.update_one(key, {"$setOnInsert": fields}, upsert=True)
        return str(watch["item_name"])
