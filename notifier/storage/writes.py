"""Upserts described as data, so the web (async) and workers (sync) share one definition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


async def apply_async(db: AsyncDatabase[Any], writes: Sequence[Upsert]) -> None:
    """Run the upserts in order with the asyncio client."""
    for w in writes:
        await db[w.collection].update_one(w.filter, w.update, upsert=True)
