"""Watchlists: the items a shopper wants to hear about, with an optional target price."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError, NotFound
from notifier.storage.writes import Upsert, apply_async

MAX_ITEMS = 200


@dataclass(frozen=True)
class WatchInput:
    """An item to watch, as posted."""

    item_name: str
    target_price_in_cents: int | None = None

    @classmethod
    def parse(cls, body: object) -> WatchInput:
        """Read a watch from a JSON body; raise InputError naming the bad field."""
        b = validation.body_object(body, ("item_name", "target_price_in_cents"))
        return cls(
            item_name=validation.text(b, "item_name", validation.NAME_LENGTH),
            target_price_in_cents=validation.cents(b, "target_price_in_cents", required=False),
        )


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

    async def remove(self, user_id: str, item_name: str) -> None:
        """Stop watching an item; NotFound when it was not watched."""
        result = await self._watchlists.delete_one(
            {"user_id": user_id, "item_key": validation.item_key(item_name)}
        )
        if result.deleted_count == 0:
            raise NotFound(f"{item_name!r} is not on your watchlist")
