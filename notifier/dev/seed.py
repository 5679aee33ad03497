"""Demo data for development: users, stores, prices and watchlists, seeded once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.synchronous.database import Database

from notifier.accounts.users import create_user
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply

STORES = ("Fresh Mart", "Green Grocer", "Corner Market", "Value Foods")

# item name -> regular price in cents
CATALOG = {
    "Milk 1L": 349,
    "Bread": 299,
    "Free-range eggs (12)": 429,
    "Apples 1kg": 399,
    "Coffee beans 500g": 899,
    "Orange juice": 479,
    "Bananas": 159,
    "Greek yogurt": 129,
    "Aged cheddar": 549,
    "Pasta 500g": 199,
}

# Interleaved, so a round-robin demo feed reaches each shopper every other step.
WATCHLISTS: list[tuple[str, str, int | None]] = [
    ("alice", "Milk 1L", None),
    ("bob", "Bread", None),
    ("alice", "Free-range eggs (12)", None),
    ("bob", "Apples 1kg", None),
    ("alice", "Coffee beans 500g", 799),
    ("bob", "Orange juice", None),
    ("alice", "Bananas", None),
    ("bob", "Coffee beans 500g", None),
    ("alice", "Aged cheddar", None),
]


def seed(db: Database[Any], demo_password: str) -> bool:
    """Create the demo data unless it exists; True when this call created it."""
    for name, role in (("alice", "shopper"), ("bob", "shopper"), ("admin", "admin")):
        address = f"{name}@example.com"
        apply(db, [create_user(name, demo_password, role, address)])
        # Demo users seeded before email existed get an address too.
        db.users.update_one({"username": name, "email": None}, {"$set": {"email": address}})
    marker = db.meta.update_one(
        {"_id": "demo-seed"}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True
    )
    if marker.upserted_id is None:
        return False  # seeded by an earlier run; keep whatever the users changed since
    users = {u["username"]: str(u["_id"]) for u in db.users.find({}, {"username": 1})}
    for store in STORES:
        for item, regular in CATALOG.items():
            _, writes = record_price(PriceInput(store, item, regular, regular))
            apply(db, writes)
    for username, item, target in WATCHLISTS:
        apply(db, [watch(users[username], WatchInput(item, target))])
    return True
