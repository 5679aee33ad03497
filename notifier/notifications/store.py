"""Notifications in MongoDB: the source of truth every delivery path reads from."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier import validation
from notifier.formatting import iso
from notifier.kinds import NotificationType
from notifier.notifications import batch
from notifier.notifications import state as user_state
from notifier.notifications.batch import NewNotification, Stored
from notifier.notifications.filters import NotificationFilter
from notifier.notifications.ids import format_id
from notifier.notifications.ids import parse_id as parse_id  # (long imported from here)
from notifier.notifications.state import UserState
from notifier.storage.batches import RangesTogether, ReadsTogether

log = logging.getLogger(__name__)

# The most notifications a filtered page reads to fill itself (issue 23 #2): past them it
# returns what it found and a cursor to search on from, so a combination that matches
# little costs a page's worth of reads, not every match of its first filter.
CANDIDATES = 300


class Notification(msgspec.Struct, omit_defaults=True):
    """A notification as the API, the socket and the pages show it."""

    id: validation.NotificationId
    type: NotificationType
    created_at: Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
    read: bool
    data: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="by type; a deal-notification's data is DealData; an announcement's "
            "copy in the history has `announcement_id`"
        ),
    ]
    archived: Annotated[
        bool | msgspec.UnsetType,
        msgspec.Meta(
            extra_json_schema={"const": True},
            description="present on archived notifications only (they are always read)",
        ),
    ] = msgspec.UNSET


def to_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored notification as the API shows it (`archived: true` only on archived ones):
    a Notification, as the plain dict the templates, emails and envelopes read."""
    n = Notification(
        format_id(doc["seq"]),
        doc["type"],
        iso(doc["created_at"]),
        doc["read"],
        doc["data"],
        True if doc.get("archived") else msgspec.UNSET,
    )
    out = msgspec.structs.asdict(n)  # shallow: the data stays as stored
    if n.archived is msgspec.UNSET:
        del out["archived"]
    return out


@dataclass(frozen=True)
class Page:
    """One page of a user's notifications, newest first (a NotificationPage)."""

    items: list[dict[str, Any]]
    next: str | None
    unread_count: int
    # True when the search stopped after CANDIDATES notifications before filling the page:
    # `next` (as `before`) searches on from where it stopped; `searched` says how far it got.
    partial: bool = False
    searched: int = 0


class NotificationPage(msgspec.Struct):
    """One page of a user's notifications, newest first (GET /api/notifications)."""

    items: list[Notification]
    next: Annotated[
        validation.NotificationId | None,
        msgspec.Meta(description="pass as `before` for older (or to search on, when `partial`)"),
    ]
    unread_count: Annotated[int, msgspec.Meta(ge=0)]
    partial: Annotated[
        bool,
        msgspec.Meta(
            description=f"true when a filtered page stopped after reading {CANDIDATES} "
            "notifications before it was full: `items` holds what matched among them (maybe "
            "none) and `next` is where to search on from (more may match below it)"
        ),
    ] = False
    searched: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="when `partial`: how many notifications (the newest, or those just "
            "below `before`) the search went through; else 0",
        ),
    ] = 0


class NotificationRepository:
    """Reading and marking a user's notifications (web process, asyncio client).

    A user's seqs run 1, 2, ... with no holes, so a page is a bounded seq range read
    through the (user_id, seq) index, never a sort of everything the user has. Where
    the seqs have got to and how many are unread come from the user's state document
    (notifier/notifications/state.py), never from counting.
    """

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._db = db
        self._notifications = db.notifications
        self._states = db[user_state.COLLECTION]
        self._state_reads = ReadsTogether(self._states)  # a burst of connects: one query
        self._replays = RangesTogether(self._notifications, "user_id")  # a storm's replays

    async def state(self, user_id: str) -> UserState:
        """The user's newest seq, unread count and announcements mark: one read.

        `max_seq` is the state's, which is never ahead but may be behind by the
        notifications of a writer that died before updating it (see max_seq for the
        exact one). A user without a state document has no notifications yet (every
        writer creates it, and migration 2 gave every earlier user one): that reads as
        empty, with the announcements mark their user document was created with. Nothing
        is written: a connect never writes to MongoDB.
        """
        doc = await self._state_reads.get(user_id)
        if doc is None:
            return UserState(0, 0, await _users_seen_mark(self._db, user_id))
        return user_state.from_doc(doc)

    async def page(
        self,
        user_id: str,
        limit: int = 20,
        before: int | None = None,
        unread_only: bool = False,
        state: UserState | None = None,
        filters: NotificationFilter | None = None,
    ) -> Page:
        """Up to `limit` notifications older than `before` (and matching `filters`), newest first.

        Two reads without filters: the state (unless the caller has it) and the page.
        """
        state = state or await self.state(user_id)
        filters = filters or NotificationFilter()
        if unread_only:
            filters = replace(filters, unread=True)
        stopped = None
        if not filters.empty:
            docs, stopped = await self._filtered(
                user_id, filters, state, limit, before=before, budget=CANDIDATES
            )
        else:
            # The state's seq is never ahead, so from `top - limit` up there are at least
            # limit + 1 seqs (no holes), plus the few a dead writer left past it: with no
            # upper bound but `before`, those are found too.
            top = state.max_seq if before is None else min(state.max_seq, before - 1)
            query: dict[str, Any] = {"user_id": user_id, "seq": {"$gt": top - limit - 1}}
            if before is not None:
                query["seq"]["$lt"] = before
            cursor = self._notifications.find(query).sort("seq", DESCENDING).limit(limit + 1)
            docs = [d async for d in cursor]
            if any(d.get("archived") for d in docs):  # archived ones leave the default view
                docs, stopped = await self._filtered(
                    user_id, filters, state, limit, before=before, budget=CANDIDATES
                )
        items = [to_json(d) for d in docs[:limit]]
        if len(docs) > limit:
            return Page(items, items[-1]["id"], state.unread_count)
        if stopped is not None:  # gave up: search on below the last one read
            top = state.max_seq if before is None else min(state.max_seq, before - 1)
            searched = max(0, top - stopped + 1)
            return Page(items, format_id(stopped), state.unread_count, True, searched)
        return Page(items, None, state.unread_count)

    async def newer_page(
        self,
        user_id: str,
        after: int,
        limit: int = 20,
        filters: NotificationFilter | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The `limit` notifications just newer than `after`, newest first (a previous page),
        and the seq the search stopped at when it gave up after CANDIDATES (else None)."""
        filters = filters or NotificationFilter()
        if filters.empty:
            docs = await self.after(user_id, after, limit)
            if not any(d.get("archived") for d in docs):
                return [to_json(d) for d in docs][::-1], None
        state = await self.state(user_id)
        docs, stopped = await self._filtered(
            user_id, filters, state, limit, after=after, budget=CANDIDATES
        )
        partial = stopped if len(docs) <= limit else None
        return [to_json(d) for d in docs[:limit]][::-1], partial

    async def _filtered(
        self,
        user_id: str,
        filters: NotificationFilter,
        state: UserState,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        budget: int | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to limit + 1 matches next to `before` (newest first) or `after` (oldest first),
        and, when it read `budget` notifications without finding limit + 1, the seq of the
        last one it read (where to search on from); else None.

        Every filter is an equality ahead of seq in an index, so each query is a bounded
        seq range read through it: windows of seqs from the starting point, growing
        fourfold while too few match. Whatever the depth, a page reads the matches in a
        few windows, never the user's whole history (some servers sort a range read
        without bounds in memory). A date range is first turned into seq bounds by
        binary search over the seqs (created_at grows with seq) in point reads.
        """
        low, high = 1, None  # high None: no upper bound (a dead writer's seqs past the state's)
        if filters.since is not None:
            low = await self._first_seq_at_or_after(user_id, filters.since, state.max_seq)
        if filters.until is not None:
            last = await self._last_seq_at_or_before(user_id, filters.until, state.max_seq)
            # All known seqs before `until`: those a dead writer left past them may be too.
            high = None if last >= state.max_seq else last
        if before is not None:
            high = before - 1 if high is None else min(high, before - 1)
        if after is not None:
            low = max(low, after + 1)
        query = filters.index_query(user_id)
        found: list[dict[str, Any]] = []
        read = 0
        window = 4 * (limit + 1)
        descending = after is None
        edge = (state.max_seq if high is None else high) if descending else low
        while len(found) <= limit:
            if descending:
                lo, hi = max(low, edge - window + 1), high
            else:
                top = edge + window - 1
                lo, hi = edge, (None if top >= state.max_seq else top)
                if high is not None:
                    hi = high if hi is None else min(hi, high)
            if hi is not None and lo > hi:
                break
            seq: dict[str, int] = {"$gte": lo}
            if hi is not None:
                seq["$lte"] = hi
            cursor = self._notifications.find({**query, "seq": seq}).sort(
                "seq", DESCENDING if descending else 1
            )
            cap = None
            if filters.single:  # the server's query is the whole filter: it may stop early
                cap = limit + 1 - len(found)
            if budget is not None:
                cap = budget - read if cap is None else min(cap, budget - read)
            if cap is not None:
                cursor = cursor.limit(cap)
            docs = [d async for d in cursor]
            read += len(docs)
            found += [d for d in docs if filters.matches(d)][: limit + 1 - len(found)]
            if budget is not None and read >= budget and len(found) <= limit:
                return found, int(docs[-1]["seq"])  # gave up: a window was cut at the budget
            if descending:
                if lo <= low:
                    break
                high, edge = lo - 1, lo - 1
            else:
                if hi is None or (high is not None and hi >= high):
                    break
                edge = hi + 1
            window *= 4
        return found, None

    async def _created(self, user_id: str, seq: int) -> datetime | None:
        doc = await self._notifications.find_one(
            {"user_id": user_id, "seq": seq}, {"created_at": 1}
        )
        return user_state.utc(doc["created_at"]) if doc else None

    async def _first_seq_at_or_after(self, user_id: str, when: datetime, top: int) -> int:
        """The first seq created at or after `when` (top + 1 when none up to top)."""

        async def at_or_after(seq: int) -> bool:
            created = await self._created(user_id, seq)
            return created is not None and created >= when

        return await _first_seq(at_or_after, top)

    async def _last_seq_at_or_before(self, user_id: str, when: datetime, top: int) -> int:
        """The last seq up to `top` created at or before `when` (0 when none)."""

        async def after_when(seq: int) -> bool:
            created = await self._created(user_id, seq)
            return created is None or created > when

        return await _first_seq(after_when, top) - 1

    async def after(self, user_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored notifications newer than `seq`, oldest first (for replay).

        Replays asked at once from the same seq are one query (RangesTogether); callers
        share the documents, which nobody changes.
        """
        return await self._replays.get((user_id, seq, limit))

    async def max_seq(self, user_id: str) -> int:
        """The user's highest seq, 0 when they have none: exact, in two reads.

        The state's seq is never ahead, so the answer is among the few seqs from there
        on (a range read through the index).
        """
        known = (await self.state(user_id)).max_seq
        found = await self._notifications.find_one(**user_state.newest_query(user_id, known))
        return user_state.newest(found, known)

    async def unread_count(self, user_id: str) -> int:
        """How many of the user's notifications are unread (from the state, no counting)."""
        return (await self.state(user_id)).unread_count

    async def mark_acknowledged(self, user_id: str, seq: int) -> None:
        """Note that a page showed the user everything up to `seq`, a seq known to be one of
        theirs (a socket's newest sent): one write, no read."""
        await self._states.update_one({"_id": user_id}, user_state.acknowledged(seq))

    async def acknowledge(self, user_id: str, seq: int) -> int:
        """Note that a page showed the user everything up to `seq`; returns the seq noted.

        One write when `seq` is one of the user's: the filter keeps an ack from moving past
        the state's seq, so an id the user does not have yet (another user's, or a guess)
        cannot acknowledge their future notifications. Past it, the ack is clamped to the
        exact newest (the state may lag a writer that died mid-write): two reads more.
        """
        mark = user_state.acknowledged(seq)
        done = await self._states.update_one({"_id": user_id, "seq": {"$gte": seq}}, mark)
        if done.matched_count:
            return seq
        newest = min(seq, await self.max_seq(user_id))
        if newest > 0:
            await self._states.update_one({"_id": user_id}, user_state.acknowledged(newest))
        return newest

    async def mark_read(self, user_id: str, seqs: list[int] | None) -> list[str]:
        """Mark the given notifications (or all when None) read; returns the ids that changed.

        The unread count drops by what update_many changed, not by what the find saw: of
        two concurrent mark-reads of one notification only one changes it.
        """
        query: dict[str, Any] = {"user_id": user_id, "read": False}
        if seqs is not None:
            query["seq"] = {"$in": seqs}
        changed = [format_id(d["seq"]) async for d in self._notifications.find(query, {"seq": 1})]
        if changed:
            result = await self._notifications.update_many(query, {"$set": {"read": True}})
            if result.modified_count:
                await self._states.update_one(
                    {"_id": user_id}, user_state.marked_read(result.modified_count), upsert=True
                )
        return changed

    async def matching(
        self, user_id: str, filters: NotificationFilter, limit: int
    ) -> tuple[list[int], bool]:
        """The seqs of the newest `limit` notifications matching `filters`, and whether more
        match (what a bulk action on "all matching these filters" works through)."""
        state = await self.state(user_id)
        docs, _ = await self._filtered(user_id, filters, state, limit)
        return [int(d["seq"]) for d in docs[:limit]], len(docs) > limit

    async def archive(self, user_id: str, seqs: list[int]) -> tuple[list[str], int]:
        """Archive these notifications; returns (the ids it marked read, how many it archived).

        An archived notification is always read: it is marked read first (the unread count
        drops by exactly what that changed, as for any mark-read), then archived. Nothing
        marks one unread again, so the unread count never counts an archived notification,
        and the state document needs nothing new.
        """
        marked = await self.mark_read(user_id, seqs)
        result = await self._notifications.update_many(
            {"user_id": user_id, "seq": {"$in": seqs}, "archived": {"$ne": True}},
            {"$set": {"archived": True}},
        )
        return marked, result.modified_count

    async def unarchive(self, user_id: str, seqs: list[int]) -> int:
        """Move archived notifications back to the default views (they stay read)."""
        result = await self._notifications.update_many(
            {"user_id": user_id, "seq": {"$in": seqs}, "archived": True},
            {"$unset": {"archived": ""}},
        )
        return result.modified_count


async def _first_seq(holds: Callable[[int], Awaitable[bool]], top: int) -> int:
    """The first seq in 1..top for which `holds` (false, then true, as seqs grow); top + 1
    when none: a binary search in point reads."""
    lo, hi = 1, top + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if await holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


async def _users_seen_mark(db: AsyncDatabase[Any], user_id: str) -> datetime | None:
    """The announcements mark kept on the users document before the state documents."""
    if not ObjectId.is_valid(user_id):
        return None
    user = await db.users.find_one({"_id": ObjectId(user_id)}, {"announcements_seen_at": 1})
    return user_state.utc((user or {}).get("announcements_seen_at"))


class NotificationWriter:
    """Storing notifications (workers, synchronous client): the batch writes of batch.py,
    for one notification (a batch of one) or a chunk of users, and their outbox."""

    def __init__(self, db: Database[Any]) -> None:
        self._db = db

    def store(self, wanted: list[NewNotification]) -> Stored:
        """Store one notification per user, listed in the outbox until published."""
        return batch.store_batch(self._db, wanted)

    def create(
        self, user_id: str, type: NotificationType, data: dict[str, Any], **keys: Any
    ) -> dict[str, Any] | None:
        """Store one notification, listed in the outbox until published (by the sweep, when
        not by NotificationService.notify); None when it was stored before. `keys` are
        NewNotification's (`dedupe_key`, `deal_keys`)."""
        type = NotificationType(type)  # a ValueError for a type nobody knows
        stored = self.store([NewNotification(user_id, type, data, **keys)])
        return stored.docs[0] if stored.docs else None

    def published(self, outbox_id: ObjectId) -> None:
        """Take a batch whose notifications are published out of the outbox."""
        batch.published(self._db, outbox_id)

    def waiting(self, older_than: timedelta) -> Iterator[tuple[ObjectId, list[dict[str, Any]]]]:
        """The outbox's batches older than `older_than`, each with its notifications."""
        return batch.waiting(self._db, older_than)

    def max_seq(self, user_id: str) -> int:
        """The user's highest seq, 0 when they have none (the state's, then just past it)."""
        known = self._db[user_state.COLLECTION].find_one({"_id": user_id}, {"seq": 1})
        return batch.highest_stored(self._db, user_id, user_state.from_doc(known or {}).max_seq)

    def unread_count(self, user_id: str) -> int:
        """How many of the user's notifications are unread (from the state, no counting)."""
        return user_state.unread(self._db[user_state.COLLECTION].find_one({"_id": user_id}))
