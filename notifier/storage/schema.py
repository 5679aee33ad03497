"""MongoDB indexes, created idempotently at start and by the Procfile's release step."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

# (collection, keys, options)
INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    ("users", [("username", ASCENDING)], {"unique": True}),
    ("prices", [("store_id", ASCENDING), ("item_key", ASCENDING)], {"unique": True}),
    ("prices", [("item_key", ASCENDING)], {}),
    ("watchlists", [("user_id", ASCENDING), ("item_key", ASCENDING)], {"unique": True}),
    ("watchlists", [("item_key", ASCENDING)], {}),
    # An item's watchers in user order: a check streams them chunk by chunk.
    ("watchlists", [("item_key", ASCENDING), ("user_id", ASCENDING)], {}),
    # Prices that expire: the scheduled check looks at those that just did.
    ("prices", [("valid_until", ASCENDING)], {}),
    # A user's notifications, newest first; seq is unique per user.
    ("notifications", [("user_id", ASCENDING), ("seq", DESCENDING)], {"unique": True}),
    ("notifications", [("user_id", ASCENDING), ("read", ASCENDING)], {}),
    # What a user has been told already (multikey over the deal keys).
    ("notifications", [("user_id", ASCENDING), ("deal_keys", ASCENDING)], {}),
    # Told once: no two notifications of a user carry the same deal, whichever checks
    # (running at once on any workers) wrote them.
    (
        "notifications",
        [("deal_keys", ASCENDING), ("user_id", ASCENDING)],
        {
            "name": "told_once",
            "unique": True,
            "partialFilterExpression": {"deal_keys": {"$exists": True}},
        },
    ),
    # The idempotency key: a retried or concurrent check cannot store a notification twice.
    (
        "notifications",
        [("user_id", ASCENDING), ("dedupe_key", ASCENDING)],
        {"unique": True, "partialFilterExpression": {"dedupe_key": {"$exists": True}}},
    ),
    # The outbox: notifications stored but not yet published.
    (
        "notifications",
        [("created_at", ASCENDING)],
        {"name": "outbox", "partialFilterExpression": {"unpublished": True}},
    ),
    (
        "notifications",
        [("created_at", ASCENDING)],
        {"name": "email_pending", "partialFilterExpression": {"email_pending": True}},
    ),
    ("announcements", [("created_at", DESCENDING)], {}),
    ("emails", [("status", ASCENDING), ("send_after", ASCENDING)], {}),
    ("users", [("preferences.email_mode", ASCENDING)], {}),
]


def ensure_indexes(db: Database[Any]) -> None:
    """Create every index (a no-op for those that exist)."""
    for collection, keys, options in INDEXES:
        db[collection].create_index(keys, **options)


async def ensure_indexes_async(db: AsyncDatabase[Any]) -> None:
    """Create every index with the asyncio client."""
    for collection, keys, options in INDEXES:
        await db[collection].create_index(keys, **options)
