"""Storing notifications: the one write path, for a single notification (a batch of one)
as for a deal check's chunk of many users.

A user's seq is the highest plus one, claimed by the insert itself (the (user_id, seq)
index is unique), so a user's seqs have no holes and seq N+1 never exists before N: a
connection that sees a jump knows it missed something. The users' state documents say
where the seqs have got to (reading the maximum through the index is slow on some
servers): one read of them claims the batch's seqs, one unordered insert_many stores
the notifications, one update of the states moves their seqs on and counts each new
notification as unread. A user gets at most one notification per batch, so a claimed
seq is the state's plus one; an insert that loses its seq to another writer is retried
alone, and one refused as already told (the dedupe or told-once index) is reported, so
the caller can recompute what is still new for that user.

The outbox of a batch is one document listing its notifications, written before them
and deleted once they are published (NotificationService in
notifier/realtime/publishing.py): clearing a flag on each of a thousand notifications
costs more than storing them on SecantusDB. What a failed publish or a dead worker left
listed is published by the sweep (`NotificationService.republish_pending`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.synchronous.database import Database

from notifier.kinds import NotificationType
from notifier.notifications import state as user_state
from notifier.notifications.filters import search_fields
from notifier.notifications.ids import format_id
from notifier.storage.batches import DUPLICATE_KEY, find_in

log = logging.getLogger(__name__)

SEQ_RETRIES = 20


@dataclass(frozen=True)
class NewNotification:
    """One notification to store for one user."""

    user_id: str
    type: NotificationType
    data: dict[str, Any]
    dedupe_key: str | None = None
    deal_keys: list[str] | None = None
    email_pending: bool = True  # a deal whose email is still to be decided
    push_pending: bool = False  # a deal whose push is still to be decided (a subscriber's)


@dataclass
class Stored:
    """What a batch stored, and whose notifications storage refused as told before."""

    outbox_id: ObjectId = field(default_factory=ObjectId)
    docs: list[dict[str, Any]] = field(default_factory=list)
    unread: dict[str, int] = field(default_factory=dict)  # user -> unread count after it
    refused: list[NewNotification] = field(default_factory=list)


def store_batch(db: Database[Any], wanted: list[NewNotification]) -> Stored:
    """Store one notification per user, listed in the outbox until published."""
    users = [n.user_id for n in wanted]
    assert len(set(users)) == len(users), "one notification per user per batch"
    states = {
        d["_id"]: user_state.from_doc(d)
        for d in find_in(db[user_state.COLLECTION], "_id", users, None, _STATE_FIELDS)
    }
    now = datetime.now(UTC)
    docs = []
    for n in wanted:
        NotificationType(n.type)  # a ValueError for a type nobody knows
        # No state yet: a user's first notification, as a rule (migration 2 gave every user
        # of before one). If one was stored anyway, its seq refuses this insert, which then
        # claims the next free seq alone.
        known = states.get(n.user_id)
        docs.append(_document(n, (known.max_seq if known else 0) + 1, now))
    result = Stored()
    if docs:  # listed before they exist: a worker dying in between leaves them listed
        db.outbox.insert_one(
            {"_id": result.outbox_id, "ids": [d["_id"] for d in docs], "created_at": now}
        )
    stored, lost_seq, refused = _insert(db, docs)
    for doc in lost_seq:  # another writer took the seq: claim the next free one alone
        again = _insert_alone(db, doc)
        (stored if again is not None else refused).append(again or doc)
    by_user = {n.user_id: n for n in wanted}
    result.refused = [by_user[d["user_id"]] for d in refused]
    result.docs = sorted(stored, key=lambda d: d["user_id"])
    if len(result.docs) == 1:
        # A single notification's exact count comes back with its update, in the round
        # trip the bulk write would take.
        (doc,) = result.docs
        after = db[user_state.COLLECTION].find_one_and_update(
            {"_id": doc["user_id"]},
            user_state.inserted(doc["seq"]),
            {"unread": 1},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        result.unread[doc["user_id"]] = user_state.unread(after)
        return result
    if result.docs:
        db[user_state.COLLECTION].bulk_write(
            [
                UpdateOne({"_id": d["user_id"]}, user_state.inserted(d["seq"]), upsert=True)
                for d in result.docs
            ],
            ordered=False,
        )
    for d in result.docs:  # as of the read above: what another writer did meanwhile is not in
        known = states.get(d["user_id"])
        result.unread[d["user_id"]] = (known.unread_count if known else 0) + 1
    return result


_STATE_FIELDS = {"seq": 1, "unread": 1}


def _document(n: NewNotification, seq: int, now: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "user_id": n.user_id,
        "seq": seq,
        "type": n.type,
        "created_at": now,
        "read": False,
        "data": {**n.data, "notification_id": format_id(seq)},
    }
    if n.type == NotificationType.DEAL and n.email_pending:
        doc["email_pending"] = True  # cleared once the email is decided (or swept)
    if n.type == NotificationType.DEAL and n.push_pending:
        doc["push_pending"] = True  # cleared once the push is decided (or swept)
    if n.dedupe_key:
        doc["dedupe_key"] = n.dedupe_key
    if n.deal_keys:
        doc["deal_keys"] = n.deal_keys
    doc.update(search_fields(n.type, n.data))
    return doc


def _insert(
    db: Database[Any], docs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Insert unordered: (stored, lost their seq, refused as told before)."""
    if not docs:
        return [], [], []
    try:
        db.notifications.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        failed: dict[int, dict[str, Any]] = {w["index"]: w for w in e.details["writeErrors"]}
        others = [w for w in failed.values() if w.get("code") != DUPLICATE_KEY]
        if others:
            raise
        stored = [d for i, d in enumerate(docs) if i not in failed]
        lost = [docs[i] for i, w in failed.items() if "seq" in w.get("keyPattern", {})]
        refused = [docs[i] for i, w in failed.items() if "seq" not in w.get("keyPattern", {})]
        return stored, lost, refused
    return docs, [], []


def _insert_alone(db: Database[Any], doc: dict[str, Any]) -> dict[str, Any] | None:
    """Claim the next free seq for one document; None when it is refused as told before."""
    for attempt in range(SEQ_RETRIES):
        # The seq just past the lost one; after another miss, the real maximum.
        seq = highest_stored(db, doc["user_id"], doc["seq"]) + 1 if attempt else doc["seq"] + 1
        doc = {**doc, "seq": seq}  # the same _id: the batch's outbox lists it
        doc["data"] = {**doc["data"], "notification_id": format_id(seq)}
        try:
            db.notifications.insert_one(doc)
            return doc
        except DuplicateKeyError as e:
            if "seq" not in (e.details or {}).get("keyPattern", {}):
                return None
    raise RuntimeError(f"could not claim a notification seq for user {doc['user_id']}")


def highest_stored(db: Database[Any], user_id: str, known: int = 0) -> int:
    """The user's highest seq, 0 when they have none (from `known` on, a seq never ahead)."""
    found = db.notifications.find_one(**user_state.newest_query(user_id, known))
    return user_state.newest(found, known)


def published(db: Database[Any], outbox_id: ObjectId) -> None:
    """Take a batch whose notifications are published out of the outbox."""
    db.outbox.delete_one({"_id": outbox_id})


def waiting(
    db: Database[Any], older_than: timedelta, limit: int = 1000
) -> Iterator[tuple[ObjectId, list[dict[str, Any]]]]:
    """Batches listed in the outbox for longer than `older_than` (younger ones may still be
    publishing), each with its notifications in seq order."""
    cutoff = datetime.now(UTC) - older_than
    # Read as they are swept (a batch's record lists up to a thousand ids), a hundred a time.
    with db.outbox.find({"created_at": {"$lt": cutoff}}).limit(limit).batch_size(100) as records:
        for record in records:
            docs = find_in(db.notifications, "_id", record["ids"])
            yield record["_id"], sorted(docs, key=lambda d: int(d["seq"]))
