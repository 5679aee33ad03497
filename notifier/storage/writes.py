"""Upserts described as data, so the web (async) and workers (sync) share one definition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database


@dataclass(frozen=True)
class Upsert:
    """One update_one(filter, update, upsert=True) on a collection."""

    collection: str
    filter: dict[str, Any]
    update: dict[str, Any]


def apply(db: Database[Any], writes: Sequence[Upsert]) -> None:
    """Run the upserts in order with the synchronous client."""
    for w in writes:
        db[w.collection].update_one(w.filter, w.update, upsert=True)


def apply_bulk(db: Database[Any], writes: Sequence[Upsert]) -> None:
    """Run many upserts as one ordered bulk write per collection.

    Only for writes whose collections do not depend on each other's order (the writes of
    many prices): within a collection the order stands, so the last price of an item wins.
    """
    by_collection: dict[str, list[UpdateOne]] = {}
    for w in writes:
        by_collection.setdefault(w.collection, []).append(
            UpdateOne(w.filter, w.update, upsert=True)
        )
    for collection, ops in by_collection.items():
        db[collection].bulk_write(ops, ordered=True)


async def apply_async(db: AsyncDatabase[Any], writes: Sequence[Upsert]) -> None:
    """Run the upserts in order with the asyncio client."""
    for w in writes:
        await db[w.collection].update_one(w.filter, w.update, upsert=True)
