"""Price history: every price a store set, and each store's lowest price of each day.

record_price writes one entry per price it sets, keyed by that price's id, so a retried
write (an import task run twice) records it once; it also lowers that store's low of the
day in `price_months`: one document per item, store and month (a bucket), holding the
month's daily lows as `lows: {"01": cents, ..., "31": cents}` (day numbers are the only
field names: no name anyone typed becomes one). Both are kept PRICE_HISTORY_DAYS by TTL
indexes. Pages read only the buckets, by `bucket` (item key and month) through an index:
what an item page, the watchlist or the dashboard reads is bounded by stores x months of
the window, however many times a day a price changed. The watchlist's best price, its
"N-day low" and sparkline and an item page's chart all cover PRICE_WINDOW_DAYS; the deal
check's "lowest in N days" reads the changes themselves (it must leave the price being
judged out).
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
MONTHS_COLLECTION = "price_months"
WINDOW_DAYS = 90  # PRICE_WINDOW_DAYS's default: the one window of every price figure


def month_start(day: date) -> datetime:
    """Midnight UTC of the first of `day`'s month (what a bucket is keyed and expires by)."""
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def bucket(item_key: str, day: date) -> str:
    """The bucket of an item's daily lows for `day`'s month: "milk 1l|2026-03"."""
    return f"{item_key}|{day.year:04d}-{day.month:02d}"


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


def daily_low(
    store_id: str,
    store_name: str,
    item_key: str,
    item_name: str,
    price_in_cents: int,
    now: datetime,
) -> Upsert:
    """The write that lowers a store's low of the day for an item to this price (idempotent)."""
    day = (now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)).date()
    return Upsert(
        MONTHS_COLLECTION,
        {"bucket": bucket(item_key, day), "store_id": store_id},
        {
            "$min": {f"lows.{day.day:02d}": price_in_cents},
            "$set": {"store_name": store_name, "item_name": item_name},
            "$setOnInsert": {"item_key": item_key, "month": month_start(day)},
        },
    )


def lowest_before(
    db: Database[Any],
    item_keys: Iterable[str],
    exclude_ids: Iterable[str],
    now: datetime,
    days: int = WINDOW_DAYS,
) -> dict[str, int]:
    """Per item, the lowest price recorded in the last `days` days other than `exclude_ids`.

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
                    "at": {"$gte": now - timedelta(days=days)},
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

        Two reads whatever the number of items: the current prices, and the month buckets
        of daily lows the window touches (one per item, store and month: never the
        changes themselves).
        """
        now = now or datetime.now(UTC)
        keys = sorted(set(item_keys))
        found = {k: ItemPrices(k) for k in keys}
        if not keys:
            return found
        active = {"$or": [{"valid_until": None}, {"valid_until": {"$gt": now}}]}
        async for p in self._db.prices.find({"item_key": {"$in": keys}, **active}):
            found[p["item_key"]].current.append(p)
        first = (now - timedelta(days=days - 1)).astimezone(UTC).date()
        calendar = [first + timedelta(days=i) for i in range(days)]
        months = sorted({(d.year, d.month) for d in calendar})
        buckets = [bucket(k, date(y, m, 1)) for k in keys for y, m in months]
        lows: dict[str, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
        names: dict[str, str] = {}
        cursor = self._db[MONTHS_COLLECTION].find(
            {"bucket": {"$in": buckets}},
            {"_id": 0, "item_key": 1, "store_name": 1, "item_name": 1, "month": 1, "lows": 1},
        )
        async for r in cursor:
            month = r["month"].date()
            store = lows[r["item_key"]][r["store_name"]]
            for number, low in (r.get("lows") or {}).items():
                day = month.replace(day=int(number))
                if day >= first:
                    store[day] = min(int(low), store.get(day, int(low)))
            names[r["item_key"]] = r["item_name"]
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
