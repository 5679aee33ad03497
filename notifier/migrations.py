"""Data migrations: each runs once, in order, and is recorded in the `migrations` collection.

The release step runs them after creating the indexes. A migration must be safe to run
again (a release that dies between running one and recording it runs it once more).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.synchronous.database import Database

from notifier.kinds import NotificationType
from notifier.notifications import state
from notifier.notifications.filters import search_fields
from notifier.shopping import history
from notifier.shopping.items import backfill_known_items
from notifier.storage.batches import batched, unset_each


def counter_id(user_id: str) -> str:
    """The `counters` document migration 1 wrote (the state documents replaced them)."""
    return f"notifications:{user_id}"


def backfill_notification_counters(db: Database[Any]) -> int:
    """Give every user with notifications a seq counter, so writers need not scan for the max.

    Notifications stored before the counters existed leave their users without one, and
    each write for them then reads the highest seq through the index (slow on some
    servers). `$max` keeps a counter that is already further along as it is.
    """
    users = db.notifications.aggregate([{"$group": {"_id": "$user_id", "seq": {"$max": "$seq"}}}])
    changed = 0
    for row in users:
        result = db.counters.update_one(
            {"_id": counter_id(row["_id"])}, {"$max": {"seq": row["seq"]}}, upsert=True
        )
        changed += int(result.modified_count or result.upserted_id is not None)
    return changed


def build_user_states(db: Database[Any]) -> int:
    """Give every user a state document (newest seq, unread, announcements mark) by recount.

    It replaces the `counters` documents (no longer read or written) and carries over
    the users' `announcements_seen_at`. `python -m notifier repair-counts` runs the same.
    """
    return state.recount(db)


BACKFILL_BATCH = 1000  # updates per bulk write


def add_search_fields(db: Database[Any]) -> int:
    """Give deal notifications stored before the history filters their search keys.

    Run by every release step (`migrate`), not recorded as a numbered migration: it only
    touches notifications that lack the keys, so once done it changes nothing.
    """
    changed, writes = 0, []
    missing = {"type": NotificationType.DEAL, "terms": {"$exists": False}}
    for doc in db.notifications.find(missing, {"type": 1, "data": 1}):
        writes.append(
            UpdateOne({"_id": doc["_id"]}, {"$set": search_fields(doc["type"], doc["data"])})
        )
        if len(writes) == BACKFILL_BATCH:
            changed += db.notifications.bulk_write(writes, ordered=False).modified_count
            writes = []
    if writes:
        changed += db.notifications.bulk_write(writes, ordered=False).modified_count
    return changed


def summarise_price_days(db: Database[Any]) -> int:
    """Give the price history recorded before the daily lows (`price_months`) its daily lows.

    One aggregation per run, grouped by item, store and day; `$min` makes running it
    again (or alongside prices being set) change nothing.
    """
    rows = db[history.COLLECTION].aggregate(
        [
            {
                "$group": {
                    "_id": {
                        "item": "$item_key",
                        "store": "$store_id",
                        "day": {"$dateToString": {"format": "%Y-%m-%d", "date": "$at"}},
                    },
                    "low": {"$min": "$price_in_cents"},
                    "store_name": {"$last": "$store_name"},
                    "item_name": {"$last": "$item_name"},
                }
            }
        ]
    )
    changed, writes = 0, []
    for r in rows:
        g = r["_id"]
        day = datetime.fromisoformat(g["day"]).replace(tzinfo=UTC)
        w = history.daily_low(g["store"], r["store_name"], g["item"], r["item_name"], r["low"], day)
        writes.append(UpdateOne(w.filter, w.update, upsert=True))
        if len(writes) == BACKFILL_BATCH:
            changed += _written(db, writes)
            writes = []
    if writes:
        changed += _written(db, writes)
    return changed


def _written(db: Database[Any], writes: list[UpdateOne]) -> int:
    result = db[history.MONTHS_COLLECTION].bulk_write(writes, ordered=False)
    return result.modified_count + result.upserted_count


INDEX_NOT_FOUND = 27


def list_flagged_in_outbox(db: Database[Any]) -> int:
    """Move what the old outbox flag left waiting into the outbox collection, and drop
    the flag's index.

    Single notifications were once flagged `unpublished` until published, with a sweep
    of their own; now every notification is listed in the outbox collection (a single
    one is a batch of one). Each thousand flagged ones become one outbox record, listed
    before their flags go, so the sweep publishes them; run again after dying in between,
    some are listed twice and published twice, which a page shows once (ids are stable).
    """
    flagged = [d["_id"] for d in db.notifications.find({"unpublished": True}, {"_id": 1})]
    for ids in batched(flagged, BACKFILL_BATCH):
        db.outbox.insert_one({"_id": ObjectId(), "ids": list(ids), "created_at": datetime.now(UTC)})
        unset_each(db.notifications, ids, "unpublished")
    try:
        db.notifications.drop_index("outbox")
    except OperationFailure as e:
        if e.code != INDEX_NOT_FOUND:
            raise
    return len(flagged)


# (number, name, migration); numbers only ever grow, and a released one never changes.
MIGRATIONS: list[tuple[int, str, Callable[[Database[Any]], int]]] = [
    (1, "backfill notification counters", backfill_notification_counters),
    (2, "build user state documents by recount", build_user_states),
    (3, "summarise the price history by store and day", summarise_price_days),
    (4, "make every priced item known (the watch form's suggestions)", backfill_known_items),
    (5, "list flagged unpublished notifications in the outbox", list_flagged_in_outbox),
]


def migrate(db: Database[Any]) -> list[tuple[str, int]]:
    """Run the migrations not yet recorded; returns (name, documents changed) for each run."""
    done = {doc["_id"] for doc in db.migrations.find({}, {"_id": 1})}
    ran: list[tuple[str, int]] = []
    for number, name, run in MIGRATIONS:
        if number in done:
            continue
        changed = run(db)
        try:
            db.migrations.insert_one(
                {"_id": number, "name": name, "changed": changed, "applied_at": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            continue  # a concurrent release recorded it first (the migration is idempotent)
        ran.append((name, changed))
    return ran
