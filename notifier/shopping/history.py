"""Price history: every price a store set, kept PRICE_HISTORY_DAYS by a TTL index.

record_price writes one entry per price it sets, keyed by that price's id, so a retried
write (an import task run twice) records it once. Readers work on daily lows per store
(one aggregation per request, however many changes a day brought): the watchlist's
best price, 90-day low and 30-day sparkline, an item page's chart, and the deal check's
"lowest in 90 days".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier.storage.writes import Upsert

COLLECTION = "price_history"
LOW_DAYS = 90  # "lowest in 90 days", and the watchlist's low
SPARK_DAYS = 30  # the watchlist's sparkline


def history_entry(
    price_id: str,
    store_id: str,
    store_name: str,
    item_key: str,
    item_name: str,
    price_in_cents: int,
    regular_price_in_cents: int,
    now: datetime,
) -> Upsert:
    """The write that records one price in the history (once, however often it runs)."""
    return Upsert(
        COLLECTION,
        {"_id": price_id},
        {
            "$setOnInsert": {
                "store_id": store_id,
                "store_name": store_name,
                "item_key": item_key,
                "item_name": item_name,
                "price_in_cents": price_in_cents,
                "regular_price_in_cents": regular_price_in_cents,
                "at": now,
            }
        },
    )


def lowest_before(
    db: Database[Any], item_keys: Iterable[str], exclude_ids: Iterable[str], now: datetime
) -> dict[str, int]:
    """Per item, the lowest price recorded in the last 90 days other than `exclude_ids`.

    One aggregation for a whole chunk of a deal check; an item with no other price in
    the window is missing (nothing to compare with, so never "lowest").
    """
    keys = sorted(set(item_keys))
    if not keys:
        return {}
    rows = db[COLLECTION].aggregate(
        [
            {
                "$match": {
                    "item_key": {"$in": keys},
                    "at": {"$gte": now - timedelta(days=LOW_DAYS)},
                    "_id": {"$nin": sorted(set(exclude_ids))},
                }
            },
            {"$group": {"_id": "$item_key", "low": {"$min": "$price_in_cents"}}},
        ]
    )
    return {r["_id"]: int(r["low"]) for r in rows}


@dataclass
class ItemPrices:
    """An item's prices: now (best and per store) and by day over a window."""

    item_key: str
    item_name: str = ""
    best_price_in_cents: int | None = None
    best_store_name: str | None = None
    regular_price_in_cents: int | None = None
    low_in_cents: int | None = None  # over the window asked for, today's best included
    days: list[date] = field(default_factory=list)
    best_by_day: list[int | None] = field(default_factory=list)
    by_store: dict[str, list[int | None]] = field(default_factory=dict)  # store name -> days
    current: list[dict[str, Any]] = field(default_factory=list)  # active prices, best first


class PriceHistoryRepository:
    """Reading prices and their history (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._db = db

    async def items(
        self, item_keys: Iterable[str], days: int, now: datetime | None = None
    ) -> dict[str, ItemPrices]:
        """Per item: today's prices, and each store's daily low over the last `days` days.

        Two reads whatever the number of items: the current prices and one aggregation.
        """
        now = now or datetime.now(UTC)
        keys = sorted(set(item_keys))
        found = {k: ItemPrices(k) for k in keys}
        if not keys:
            return found
        active = {"$or": [{"valid_until": None}, {"valid_until": {"$gt": now}}]}
        async for p in self._db.prices.find({"item_key": {"$in": keys}, **active}):
            found[p["item_key"]].current.append(p)
        first = (now - timedelta(days=days - 1)).date()
        calendar = [first + timedelta(days=i) for i in range(days)]
        lows: dict[str, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
        names: dict[str, str] = {}
        rows = await self._db[COLLECTION].aggregate(
            [
                {
                    "$match": {
                        "item_key": {"$in": keys},
                        "at": {"$gte": datetime.combine(first, datetime.min.time(), UTC)},
                    }
                },
                {
                    "$group": {
                        "_id": {
                            "item": "$item_key",
                            "store": "$store_name",
                            "day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$at"}},
                        },
                        "low": {"$min": "$price_in_cents"},
                        "name": {"$last": "$item_name"},
                    }
                },
            ]
        )
        async for r in rows:
            g = r["_id"]
            lows[g["item"]][g["store"]][date.fromisoformat(g["day"])] = int(r["low"])
            names[g["item"]] = r["name"]
        for key, item in found.items():
            _fill(item, calendar, lows[key], names.get(key))
        return found


def _fill(
    item: ItemPrices, calendar: list[date], lows: dict[str, dict[date, int]], name: str | None
) -> None:
    """Work out the best price now, the daily series and the low of the window."""
    item.current.sort(key=lambda p: (p["price_in_cents"], p["store_id"]))
    if item.current:
        best = item.current[0]
        item.item_name = best["item_name"]
        item.best_price_in_cents = best["price_in_cents"]
        item.best_store_name = best["store_name"]
        item.regular_price_in_cents = best["regular_price_in_cents"]
    item.item_name = item.item_name or name or item.item_key
    item.days = calendar
    # A store whose price did not change in the window has held its current one all along.
    steady = {
        p["store_name"]: p["price_in_cents"] for p in item.current if p["store_name"] not in lows
    }
    for store in sorted(set(lows) | set(steady)):
        known: int | None = steady.get(store)
        series: list[int | None] = []
        for day in calendar:
            known = lows.get(store, {}).get(day, known)
            series.append(known)
        item.by_store[store] = series
    item.best_by_day = [
        min((v for s in item.by_store.values() if (v := s[i]) is not None), default=None)
        for i in range(len(calendar))
    ]
    seen = [c for c in item.best_by_day if c is not None]
    if item.best_price_in_cents is not None:
        seen.append(item.best_price_in_cents)
    item.low_in_cents = min(seen) if seen else None
