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
FLYER_DISCOUNTS = (10, 20, 30)
FLYER_WEIGHTS = (12, 3, 1)
DEAL_EVERY = 3  # steps: a deal every third step, a routine price every step


class DemoFeed:
    """Each step a routine price; every DEAL_EVERY steps, a short-lived flyer discount on
    the next watched item (in turn, so each shopper's items come round)."""

    def __init__(self, db: Database[Any], rng: random.Random | None = None) -> None:
        self._db = db
        self._rng = rng or random.Random()

    def step(self) -> list[str]:
        """Post this step's prices; returns the item keys that changed."""
        changed = []
        watched = list(self._db.watchlists.find({}, {"item_key": 1, "item_name": 1}).sort("_id", 1))
        turn = self._db.meta.find_one_and_update(
            {"_id": "demo-feed"},
            {"$inc": {"turn": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert turn is not None
        deal_turn, rest = divmod(turn["turn"] - 1, DEAL_EVERY)
        if watched and rest == 0:  # the first step deals at once
            item = watched[deal_turn % len(watched)]
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
