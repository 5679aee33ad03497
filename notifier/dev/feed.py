"""The development price feed: a steady trickle of price changes that makes deals appear."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.synchronous.database import Database

from notifier.dev.seed import CATALOG, STORES
from notifier.shopping.prices import PriceInput, record_price
from notifier.storage.writes import apply

DEAL_LIFETIME = timedelta(minutes=2)
# A flyer's discounts, in percent off, shallow ones the most common: prices come back to
# the same few levels, as a store's weekly deals do, so a new low (the news under the
# alert rules) is rare once each level was seen, and the feed still moves every step.
FLYER_DISCOUNTS = (10, 15, 20, 25, 30)
FLYER_WEIGHTS = (8, 5, 3, 2, 1)


class DemoFeed:
    """Each step: a short-lived flyer discount on the next watched item, and a routine price."""

    def __init__(self, db: Database[Any], rng: random.Random | None = None) -> None:
        self._db = db
        self._rng = rng or random.Random()

    def step(self) -> list[str]:
        """Post this step's prices; returns the item keys that changed."""
        changed = []
        watched = list(self._db.watchlists.find({}, {"item_key": 1, "item_name": 1}).sort("_id", 1))
        if watched:
            turn = self._db.meta.find_one_and_update(
                {"_id": "demo-feed"},
                {"$inc": {"turn": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            assert turn is not None
            item = watched[turn["turn"] % len(watched)]
            regular = CATALOG.get(item["item_name"], 500)
            [off] = self._rng.choices(FLYER_DISCOUNTS, FLYER_WEIGHTS)
            price = regular * (100 - off) // 100
            until = datetime.now(UTC) + DEAL_LIFETIME
            changed.append(
                self._post(self._rng.choice(STORES), item["item_name"], price, regular, until)
            )
        name, regular = self._rng.choice(sorted(CATALOG.items()))
        changed.append(self._post(self._rng.choice(STORES), name, regular, regular, None))
        return changed

    def _post(self, store: str, item: str, price: int, regular: int, until: datetime | None) -> str:
        _, writes = record_price(PriceInput(store, item, price, regular, until))
        apply(self._db, writes)
        return str(writes[1].filter["item_key"])
