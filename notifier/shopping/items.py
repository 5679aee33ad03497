"""Known items: the names stores have priced, one per item key (issue 20 #4).

A shopper types an item as they think of it ("coffee beans  500G"); when a store has priced
an item of that key (case and spacing do not matter: `validation.item_key`), the watch takes
the known item's display name, so alerts and pages say "Coffee beans 500g" whoever typed
what. The first name a price gave an item stays its display name. The watch form offers the
known names (a <datalist>, which works without script); an item no store has priced may
still be watched, and the watchlist says it is not priced yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier import validation
from notifier.storage.writes import Upsert

COLLECTION = "items"
SUGGESTED = 200  # names the watch form offers (in item-key order: a bounded index read)
BACKFILL_BATCH = 1000


def known(item_key: str, item_name: str, now: datetime) -> Upsert:
    """The write that makes an item known when it is priced (its first name stays)."""
    return Upsert(
        COLLECTION,
        {"_id": item_key},
        {"$setOnInsert": {"name": item_name, "first_priced_at": now}},
    )


async def display_name(db: AsyncDatabase[Any], item_name: str) -> tuple[str, bool]:
    """(the name to show for what was typed, whether a store has priced it): one read."""
    doc = await db[COLLECTION].find_one({"_id": validation.item_key(item_name)}, {"name": 1})
    return (str(doc["name"]), True) if doc else (item_name, False)


async def priced(db: AsyncDatabase[Any], item_keys: list[str]) -> set[str]:
    """Which of these items a store has priced (one read; a watchlist holds at most 200)."""
    if not item_keys:
        return set()
    cursor = db[COLLECTION].find({"_id": {"$in": item_keys}}, {"_id": 1})
    return {str(d["_id"]) async for d in cursor}


async def suggestions(db: AsyncDatabase[Any], limit: int = SUGGESTED) -> list[str]:
    """Known item names for the watch form's <datalist>."""
    cursor = db[COLLECTION].find({}, {"name": 1}).sort("_id", 1).limit(limit)
    return [str(d["name"]) async for d in cursor]


def backfill_known_items(db: Database[Any]) -> int:
    """Make every item priced before known items existed known (a migration); idempotent."""
    rows = db.prices.aggregate(
        [
            {"$sort": {"updated_at": 1}},
            {
                "$group": {
                    "_id": "$item_key",
                    "name": {"$first": "$item_name"},
                    "at": {"$first": "$updated_at"},
                }
            },
        ]
    )
    changed, writes = 0, []
    for r in rows:
        w = known(r["_id"], r["name"], r["at"])
        writes.append(UpdateOne(w.filter, w.update, upsert=True))
        if len(writes) == BACKFILL_BATCH:
            changed += db[COLLECTION].bulk_write(writes, ordered=False).upserted_count
            writes = []
    if writes:
        changed += db[COLLECTION].bulk_write(writes, ordered=False).upserted_count
    return changed
