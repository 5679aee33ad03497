"""MongoDB indexes, created idempotently at start and by the Procfile's release step."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier.storage.plans import Command, CreateIndex, IndexInformation, Plan, run, run_async

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
    # The history's filters: each is an equality before seq, so a page of any filter is
    # a bounded seq range read through one of these (see NotificationRepository.page).
    ("notifications", [("user_id", ASCENDING), ("read", ASCENDING), ("seq", DESCENDING)], {}),
    ("notifications", [("user_id", ASCENDING), ("type", ASCENDING), ("seq", DESCENDING)], {}),
    ("notifications", [("user_id", ASCENDING), ("items", ASCENDING), ("seq", DESCENDING)], {}),
    ("notifications", [("user_id", ASCENDING), ("stores", ASCENDING), ("seq", DESCENDING)], {}),
    ("notifications", [("user_id", ASCENDING), ("terms", ASCENDING), ("seq", DESCENDING)], {}),
    # The archived view (most notifications have no `archived` field at all).
    (
        "notifications",
        [("user_id", ASCENDING), ("archived", ASCENDING), ("seq", DESCENDING)],
        {},
    ),
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
    (
        "notifications",
        [("created_at", ASCENDING)],
        {"name": "email_pending", "partialFilterExpression": {"email_pending": True}},
    ),
    # Deal notifications whose push is still to be decided (notifier/push/service.py).
    (
        "notifications",
        [("created_at", ASCENDING)],
        {"name": "push_pending", "partialFilterExpression": {"push_pending": True}},
    ),
    # Browsers' push subscriptions: one per endpoint; a user's, newest first.
    ("push_subscriptions", [("endpoint", ASCENDING)], {"unique": True}),
    ("push_subscriptions", [("user_id", ASCENDING), ("updated_at", DESCENDING)], {}),
    # Planned pushes are worth nothing after the push services' TTL (a day): kept a week.
    ("pushes", [("created_at", ASCENDING)], {"expireAfterSeconds": 7 * 86400}),
    ("announcements", [("created_at", DESCENDING)], {}),
    # An item's prices over time (the TTL index on `at` is added with its setting).
    ("price_history", [("item_key", ASCENDING), ("at", ASCENDING)], {}),
    # Each store's daily lows of an item, a document a month; pages read the buckets of a
    # window by `bucket` (its TTL index on `month` is added with its setting).
    ("price_months", [("bucket", ASCENDING), ("store_id", ASCENDING)], {"unique": True}),
    ("emails", [("status", ASCENDING), ("send_after", ASCENDING)], {}),
    # Removed watches, kept an hour for Undo (notifier/shopping/watchlist.py).
    ("watchlist_removed", [("removed_at", ASCENDING)], {"expireAfterSeconds": 3600}),
    ("users", [("preferences.email_mode", ASCENDING)], {}),
    # Revocations Redis may not hold yet (notifier/accounts/revocation.py): almost none.
    (
        "users",
        [("token_version_uncached", ASCENDING)],
        {"name": "token_version_uncached", "sparse": True},
    ),
]


HISTORY_TTL_KEYS = [("at", ASCENDING)]
MONTHS_TTL_KEYS = [("month", ASCENDING)]


def _ttls(history_days: int) -> list[tuple[str, list[tuple[str, int]], int]]:
    """(collection, keys, seconds) of the TTL indexes: the history keeps PRICE_HISTORY_DAYS;
    a month of daily lows expires by its first day, so it is kept a month longer."""
    return [
        ("price_history", HISTORY_TTL_KEYS, history_days * 86400),
        ("price_months", MONTHS_TTL_KEYS, (history_days + 31) * 86400),
    ]


def ttl_change(collection: str, keys: list[tuple[str, int]], seconds: int) -> dict[str, Any]:
    """The collMod that sets an existing TTL index's expiry."""
    return {
        "collMod": collection,
        "index": {"keyPattern": dict(keys), "expireAfterSeconds": seconds},
    }


def ensure_indexes(db: Database[Any], history_days: int = 180) -> None:
    """Create every index (a no-op for those that exist); set the history's TTLs."""
    run(_indexes(history_days), db)


async def ensure_indexes_async(db: AsyncDatabase[Any], history_days: int = 180) -> None:
    """`ensure_indexes` with the asyncio client (a web process at start)."""
    await run_async(_indexes(history_days), db)


def _indexes(history_days: int) -> Plan[None]:
    """Every index, then each TTL index: created, or its expiry changed when it differs."""
    for collection, keys, options in INDEXES:
        yield CreateIndex(collection, keys, options)
    for collection, keys, seconds in _ttls(history_days):
        indexes = yield IndexInformation(collection)
        found = [i for i in indexes.values() if i["key"] == keys]
        if not found:
            yield CreateIndex(collection, keys, {"expireAfterSeconds": seconds})
        elif found[0].get("expireAfterSeconds") != seconds:  # PRICE_HISTORY_DAYS changed
            yield Command(ttl_change(collection, keys, seconds))
