"""A user's state document: newest seq, unread count and announcements seen, kept by writers.

One document per user in `user_state` (_id = user_id), so a connect or a page reads one
document instead of counting notifications. Every writer keeps it in step:

- a notification insert, once its seq is claimed: `$max seq`, `$inc unread 1`;
- a mark-read: `$inc unread -n` with n the notifications that update_many actually
  changed, so two concurrent mark-reads of the same ids decrement once. It upserts:
  a mark-read that lands between a user's first insert and that insert's update
  creates the document (seq 0, unread -n), so the insert's `$inc` ends at the true
  count instead of counting a notification already read;
- the announcements mark: `$max announcements_seen_at`;
- an acknowledgement (a page showed the user everything up to a seq): `$max acked_seq`,
  never past `seq` (the email decision reads it: notifier/email/service.py).

`seq` is never ahead of the stored notifications (it moves after the insert). A writer
that dies between its insert and its update leaves `seq` one behind and `unread` one
short; readers that need the exact maximum look just past `seq`, and `recount` (the
`repair-counts` command, and migration 2) rebuilds the documents from the notifications.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.synchronous.database import Database

COLLECTION = "user_state"


@dataclass(frozen=True)
class UserState:
    """What a connect or a page needs to know about a user's notifications."""

    max_seq: int
    unread_count: int
    announcements_seen_at: datetime | None
    acked_seq: int = 0  # the newest notification a page showed the user (covers all before)


def from_doc(doc: dict[str, Any]) -> UserState:
    """A stored state document as a UserState (unread clamped at 0, times in UTC)."""
    return UserState(
        max_seq=int(doc.get("seq", 0)),
        unread_count=unread(doc),
        announcements_seen_at=utc(doc.get("announcements_seen_at")),
        acked_seq=int(doc.get("acked_seq", 0)),
    )


def unread(doc: dict[str, Any] | None) -> int:
    """The unread count of a state document (0 without one)."""
    # A mark-read that ran between an insert and its $inc leaves it briefly at -1.
    return max(0, int((doc or {}).get("unread", 0)))


def newest_query(user_id: str, known: int = 0) -> dict[str, Any]:
    """find_one's arguments for the user's highest seq from `known` on; with the state's
    seq (never ahead), a range of the few seqs a dead writer may have left past it, read
    through the (user_id, seq) index. Both clients run it (`newest` reads the answer)."""
    return {
        "filter": {"user_id": user_id, "seq": {"$gte": known}},
        "projection": {"seq": 1},
        "sort": [("seq", DESCENDING)],
    }


def newest(found: dict[str, Any] | None, known: int = 0) -> int:
    """The highest seq, from what newest_query found."""
    return int(found["seq"]) if found else known


def utc(when: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (the clients return naive UTC)."""
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def inserted(seq: int) -> dict[str, Any]:
    """The update for a user's state once a notification with this seq is stored."""
    return {"$max": {"seq": seq}, "$inc": {"unread": 1}}


def marked_read(changed: int) -> dict[str, Any]:
    """The update (an upsert) for a user's state once `changed` notifications went from
    unread to read."""
    return {"$inc": {"unread": -changed}, "$setOnInsert": {"seq": 0}}


def acknowledged(seq: int) -> dict[str, Any]:
    """The update for a user's state once a page showed them everything up to this seq."""
    return {"$max": {"acked_seq": seq}}


def recount(db: Database[Any], user_ids: Iterable[str] | None = None) -> int:
    """Rebuild state documents from the notifications (all users, or these); returns how many.

    Users with no notifications get a document too (seq 0, unread 0), and a user's old
    `announcements_seen_at` (on the users document) is carried over. Run while writers
    are live, a write that lands between the recount and its $set can be lost from the
    unread count; running it again fixes that.
    """
    wanted = None if user_ids is None else list(user_ids)
    match: dict[str, Any] = {} if wanted is None else {"user_id": {"$in": wanted}}
    totals: dict[str, tuple[int, int]] = {}
    rows = db.notifications.aggregate(
        [
            {"$match": match},
            {
                "$group": {
                    "_id": "$user_id",
                    "seq": {"$max": "$seq"},
                    "unread": {"$sum": {"$cond": [{"$eq": ["$read", False]}, 1, 0]}},
                }
            },
        ]
    )
    for row in rows:
        totals[str(row["_id"])] = (int(row["seq"]), int(row["unread"]))
    seen: dict[str, datetime] = {}
    users_query: dict[str, Any] = {}
    if wanted is not None:
        users_query = {"_id": {"$in": [ObjectId(u) for u in wanted if ObjectId.is_valid(u)]}}
    for user in db.users.find(users_query, {"announcements_seen_at": 1}):
        uid = str(user["_id"])
        totals.setdefault(uid, (0, 0))
        if user.get("announcements_seen_at") is not None:
            seen[uid] = user["announcements_seen_at"]
    # Those asked for, or every state there is: a state whose notifications are gone is zeroed.
    if wanted is None:
        wanted = [str(d["_id"]) for d in db[COLLECTION].find({}, {"_id": 1})]
    for uid in wanted:
        totals.setdefault(str(uid), (0, 0))
    for uid, (seq, unread) in totals.items():
        update: dict[str, Any] = {"$set": {"seq": seq, "unread": unread}}
        if uid in seen:
            # The old mark on the users document: later marks (on the state) win.
            update["$max"] = {"announcements_seen_at": seen[uid]}
        db[COLLECTION].update_one({"_id": uid}, update, upsert=True)
    return len(totals)
