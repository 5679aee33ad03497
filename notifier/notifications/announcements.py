"""System announcements: stored, broadcast live, shown on connect to who missed them, and
kept in the history of every user whose account existed when it was made.

The broadcast is the fast path (one event for every socket); the history copies are a
`system-message` notification per user (`data.announcement_id`), written by workers in
chunks the way a deal check writes its notifications, so each user's history, unread
count and History's Announcements filter hold it whenever they were online. Its live
fragment shows no toast: the broadcast showed one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import msgspec
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from notifier import validation
from notifier.formatting import iso
from notifier.notifications import state
from notifier.storage.batches import batched

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
WRITE_BATCH = 1000  # updates per bulk write
CATCH_UP = timedelta(hours=24)  # how far back a returning user is shown what they missed


def to_json(doc: dict[str, Any]) -> dict[str, Any]:
    """An announcement as sockets carry it (a system-message)."""
    return {
        "id": str(doc["_id"]),
        "message": doc["message"],
        "severity": doc["severity"],
        "created_at": iso(doc["created_at"]),
    }


class AnnouncementInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A system message for every user (POST /api/announcements)."""

    message: Annotated[str, validation.text_meta(validation.MESSAGE_LENGTH)]
    severity: Annotated[Severity, validation.must("must be info, warning or critical")] = "info"

    @classmethod
    def parse(cls, body: object) -> AnnouncementInput:
        """Read an announcement from a JSON body; InputError naming the bad field."""
        given = validation.decode(cls, body)
        text = validation.text(given.message, "message", validation.MESSAGE_LENGTH)
        return msgspec.structs.replace(given, message=text)


class AnnouncementRepository:
    """Announcements and who has seen up to when (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._db = db

    async def create(self, body: object) -> dict[str, Any]:
        """Store an announcement from a JSON body; InputError when it is not one."""
        given = AnnouncementInput.parse(body)
        doc = {
            "message": given.message,
            "severity": given.severity,
            "created_at": datetime.now(UTC),
        }
        await self._db.announcements.insert_one(doc)
        return to_json(doc)

    async def missed_by(
        self, user_id: str, seen: datetime | None = None, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """What the user has not seen of the last 24 hours, oldest first; marks it seen.

        `seen` is the user's mark when the caller has read it (from the state); without
        it, it is read here. The mark becomes `now` (default: the present).
        """
        now = now or datetime.now(UTC)
        if seen is None:
            seen = await self.seen_mark(user_id)
        since = now - CATCH_UP
        if seen is not None:
            since = max(since, seen)
        cursor = self._db.announcements.find({"created_at": {"$gt": since, "$lte": now}})
        missed = [to_json(d) async for d in cursor.sort("created_at", 1)]
        await self.mark_seen(user_id, now)
        return missed

    async def seen_mark(self, user_id: str) -> datetime | None:
        """Up to when the user has seen announcements (the state's mark, else the users one)."""
        doc = await self._db[state.COLLECTION].find_one(
            {"_id": user_id}, {"announcements_seen_at": 1}
        )
        mark = state.utc((doc or {}).get("announcements_seen_at"))
        if mark is not None:
            return mark
        try:
            oid = ObjectId(user_id)
        except InvalidId:
            return None
        user = await self._db.users.find_one({"_id": oid}, {"announcements_seen_at": 1})
        return state.utc((user or {}).get("announcements_seen_at"))

    async def mark_seen(self, user_id: str, until: datetime | None = None) -> None:
        """The user has seen every announcement up to `until` (default: now)."""
        await self.mark_seen_many({user_id: until or datetime.now(UTC)})

    async def mark_seen_many(self, marks: dict[str, datetime]) -> None:
        """Each user has seen every announcement up to their time: one bulk write.

        It upserts: a user without a state document has no notifications yet, and the
        document made here (a mark, no seq, no unread) reads exactly so (state.from_doc);
        a writer's first insert then moves it on like any other.
        """
        if not marks:
            return
        states = self._db[state.COLLECTION]
        for some in batched(list(marks.items()), WRITE_BATCH):
            await states.bulk_write(
                [UpdateOne({"_id": u}, _seen(t), upsert=True) for u, t in some], ordered=False
            )

    async def newest(self) -> datetime | None:
        """When the newest announcement was made, None when there is none."""
        doc = await self._db.announcements.find_one(
            {}, {"created_at": 1}, sort=[("created_at", -1)]
        )
        return state.utc(doc["created_at"]) if doc else None


def _seen(until: datetime) -> dict[str, Any]:
    return {"$max": {"announcements_seen_at": until}}


class SeenMarks:
    """The announcement marks of sockets that closed, written together.

    A socket that heard a broadcast notes, when it closes, that its user has seen every
    announcement until then. A process that loses 10,000 sockets at once (a restart of
    the load balancer, a network blip) would send 10,000 updates, one per socket, queued
    in front of every other query; here whatever closes within WINDOW seconds goes in one
    bulk write, a user once. Used on one event loop only.
    """

    WINDOW = 0.05

    def __init__(self, repo: AnnouncementRepository) -> None:
        self._repo = repo
        self._pending: dict[str, datetime] = {}
        self._writing: asyncio.Task[None] | None = None

    def note(self, user_id: str, until: datetime | None = None) -> None:
        """The user has seen every announcement up to `until` (default: now)."""
        until = until or datetime.now(UTC)
        if user_id not in self._pending or self._pending[user_id] < until:
            self._pending[user_id] = until
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_soon())

    async def flush(self) -> None:
        """Write what is pending now, and wait for a write under way (at shutdown)."""
        await self._write()
        if self._writing is not None:
            await self._writing  # it may hold marks it took before this call

    async def _write_soon(self) -> None:
        try:
            await asyncio.sleep(self.WINDOW)  # the window in which closes are gathered
            await self._write()
        finally:
            self._writing = None

    async def _write(self) -> None:
        while self._pending:
            marks, self._pending = self._pending, {}
            try:
                await self._repo.mark_seen_many(marks)
            except PyMongoError as e:
                # At worst those users are shown an announcement once more.
                log.info("could not note announcements as seen for %d user(s): %s", len(marks), e)
                return


class LatestAnnouncement:
    """When the newest announcement was made, as this web process knows it.

    Loaded from MongoDB on first use, then moved on by each `announcement` event the
    process's bus subscriber delivers, and forgotten (to be loaded again) when the
    subscription had a gap or an event's time cannot be read. A connect that finds
    nothing newer than the user's mark skips the announcements query: an announcement
    whose event has not arrived yet reaches the socket live, because the socket is
    registered before it asks. Like the registry, it is used on the IOLoop only.
    """

    def __init__(self) -> None:
        self._newest: datetime | None = None
        self._known = False
        self._loading: asyncio.Future[None] | None = None
        self._generation = 0  # moved on by forget(): a load begun before it is stale

    async def newest(self, repo: AnnouncementRepository) -> datetime | None:
        """The newest announcement's time (one query the first time, and after a gap).

        One query, not one per handshake: the sockets that arrive together after a start
        or a gap (a reconnect storm) wait for the same load.
        """
        while not self._known:
            if self._loading is None:
                self._loading = asyncio.ensure_future(self._load(repo))
            await asyncio.shield(self._loading)
        return self._newest

    async def _load(self, repo: AnnouncementRepository) -> None:
        generation = self._generation
        try:
            loaded = await repo.newest()
        finally:
            self._loading = None
        self._newest = _later(self._newest, loaded)
        self._known = generation == self._generation

    def may_be_news(self, seen: datetime | None) -> bool:
        """Whether an announcement newer than `seen` may exist (True when unsure)."""
        if not self._known:
            return True
        if self._newest is None:
            return False  # there is none at all
        return seen is None or self._newest > seen

    def saw(self, announcement: dict[str, Any]) -> None:
        """An announcement event came over the bus."""
        try:
            when = datetime.fromisoformat(str(announcement["created_at"]).replace("Z", "+00:00"))
        except (KeyError, TypeError, ValueError):
            self.forget()
            return
        self._newest = _later(self._newest, state.utc(when))

    def forget(self) -> None:
        """Events may have been missed: load from MongoDB on next use."""
        self._known = False
        self._generation += 1


def history_done(doc: dict[str, Any]) -> bool:
    """Whether every chunk of an announcement's history copies was stored."""
    total = doc.get("history_chunks")
    return total is not None and len(doc.get("history_chunks_done") or ()) >= total


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
