"""Deal checks as jobs: what changed since the last scheduled check, and chunk bookkeeping.

A price change marks its item (`item_changes`, a version per item). The scheduled check
takes the marked items, plus those whose price just expired, and checks only those: with
nothing changed it costs two small reads, whatever the number of watches.

A check is a job split into chunks of users that any worker may run. The job document
records each finished chunk by its index (so a chunk run twice, after a worker died,
counts once); whoever records the last one, or sets the total after the last one
finished, completes the job exactly once. A check that starts with its online watchers
hands out their chunks first and records who they were (`live_planned`); the chunk that
finishes the last of them has the rest planned (`rest_due`), by one task (`claim_rest`),
so the read of every other watcher does not hold the database while the live ones are
stored.

No item key is ever a field name (an item's name is user text: a NUL byte or a "." in it
would make the document unstorable or mean a path): the job lists its changes and its
failed items as arrays of `{"item_key": ...}` entries. An item whose check failed (bad
stored data) keeps its change mark with a failure count; after MAX_FAILURES it is no
longer claimed, and the admin page lists it (`failed_items`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

from notifier.storage.writes import Upsert

CLAIM = timedelta(minutes=10)  # a claimed change is left to its check for this long
SCHEDULE_ID = "scheduled"
# A job's online watchers (up to tasks.deals.LIST_ONLINE_UP_TO ids), read by the task that
# plans the rest only: the others read a job without them.
WITHOUT_LIVE = {"live_users": 0}
MAX_FAILURES = 5  # a change whose check failed this often is no longer retried
ERROR_LENGTH = 200  # of a failure's reason, as kept for the admin page


def changed(item_key: str, now: datetime) -> Upsert:
    """The write that marks an item's price as changed (with the price's own writes)."""
    return Upsert(
        "item_changes",
        {"_id": item_key},
        {
            "$inc": {"version": 1},
            "$set": {"changed_at": now},
            # A new price is a new chance: the failures of the old one are forgotten.
            "$unset": {"claimed_until": "", "failures": "", "last_error": ""},
        },
    )


def change_list(changes: dict[str, int]) -> list[dict[str, Any]]:
    """Changes as stored in a job: an array, never a map keyed by item (user text)."""
    return [{"item_key": k, "version": v} for k, v in sorted(changes.items())]


def change_map(stored: object) -> dict[str, int]:
    """A job's changes as read back: the array, or the map older jobs stored."""
    if isinstance(stored, dict):
        return {str(k): int(v) for k, v in stored.items()}
    if isinstance(stored, list):
        return {c["item_key"]: c["version"] for c in stored if isinstance(c, dict)}
    return {}


@dataclass
class Job:
    """A deal check's bookkeeping document, as read back."""

    id: str
    requested_by: str | None
    item_keys: list[str] | None
    changes: dict[str, int]  # item -> the change version this check covers
    total: int | None
    results: dict[str, dict[str, int]] = field(default_factory=dict)  # by chunk index
    failed: dict[str, str] = field(default_factory=dict)  # item -> why its check failed

    @property
    def done(self) -> int:
        """How many chunks have finished."""
        return len(self.results)

    def totals(self) -> tuple[int, int]:
        """(users notified, deals found) over every finished chunk."""
        users = sum(r["users"] for r in self.results.values())
        deals = sum(r["deals"] for r in self.results.values())
        return users, deals

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        """A stored job document."""
        return cls(
            doc["_id"],
            doc.get("requested_by"),
            doc.get("item_keys"),
            change_map(doc.get("changes")),
            doc.get("total"),
            doc.get("results") or {},
            {f["item_key"]: f.get("error", "") for f in doc.get("failed") or ()},
        )


class DealCheckJobs:
    """Jobs and item changes in MongoDB (workers, synchronous client)."""

    def __init__(self, db: Database[Any]) -> None:
        self._db = db

    def changes_to_check(self, now: datetime | None = None) -> tuple[list[str], dict[str, int]]:
        """Items to check now and the change versions claimed: marked, or a price just expired.

        A marked item claimed by a running check is left to it. The window for expiries
        starts where the last scheduled check ended.
        """
        now = now or datetime.now(UTC)
        schedule = self._db.deal_check_schedule.find_one({"_id": SCHEDULE_ID}) or {}
        since = schedule.get("checked_until") or now - CLAIM
        expired = {
            p["item_key"]
            for p in self._db.prices.find(
                {"valid_until": {"$gt": since, "$lte": now}}, {"item_key": 1}
            )
        }
        claimed = self.claim(None, now)
        self._db.deal_check_schedule.update_one(
            {"_id": SCHEDULE_ID}, {"$set": {"checked_until": now}}, upsert=True
        )
        return sorted(expired | set(claimed)), claimed

    def claim(self, item_keys: list[str] | None, now: datetime | None = None) -> dict[str, int]:
        """Claim the marked changes of these items (or all) that no running check holds."""
        now = now or datetime.now(UTC)
        query: dict[str, Any] = {"failures": {"$not": {"$gte": MAX_FAILURES}}}
        if item_keys is not None:
            query["_id"] = {"$in": item_keys}
        claimed: dict[str, int] = {}
        for mark in self._db.item_changes.find(query):
            if mark.get("claimed_until") and mark["claimed_until"].replace(tzinfo=UTC) > now:
                continue
            taken = self._db.item_changes.update_one(
                {"_id": mark["_id"], "version": mark["version"]},
                {"$set": {"claimed_until": now + CLAIM}},
            )
            if taken.modified_count:
                claimed[mark["_id"]] = mark["version"]
        return claimed

    def start(
        self,
        job_id: str,
        requested_by: str | None,
        item_keys: list[str] | None,
        changes: dict[str, int],
    ) -> None:
        """Record a new job (again, if its task was handed out twice: nothing changes)."""
        self._db.deal_check_jobs.update_one(
            {"_id": job_id},
            {
                "$setOnInsert": {
                    "requested_by": requested_by,
                    "item_keys": item_keys,
                    "changes": change_list(changes),
                    "created_at": datetime.now(UTC),
                    "results": {},
                    "completed": False,
                }
            },
            upsert=True,
        )

    def get(self, job_id: str) -> Job:
        """A job as it stands."""
        doc = self._db.deal_check_jobs.find_one({"_id": job_id}, WITHOUT_LIVE)
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def live_planned(self, job_id: str, users: list[str]) -> None:
        """The job's first chunks, of these users (those online), are handed out."""
        self._db.deal_check_jobs.update_one({"_id": job_id}, {"$set": {"live_users": users}})

    def live_users(self, job_id: str) -> list[str]:
        """The users of the job's live chunks (none if it had none)."""
        doc = self._db.deal_check_jobs.find_one({"_id": job_id}, {"live_users": 1})
        return list((doc or {}).get("live_users") or ())

    @staticmethod
    def rest_due(job: Job, live_chunks: int) -> bool:
        """Whether the rest of a job is to be planned now: its `live_chunks` live chunks
        have all finished and it has no total yet."""
        return job.total is None and job.done >= live_chunks

    def claim_rest(self, job_id: str, task_id: str) -> bool:
        """True for the one task that plans the rest of a job (and for it again, redelivered
        after its worker died): the last live chunk's, or the planner's backstop."""
        won = self._db.deal_check_jobs.update_one(
            {"_id": job_id, "rest_by": {"$in": [None, task_id]}}, {"$set": {"rest_by": task_id}}
        )
        return bool(won.matched_count)

    def planned(self, job_id: str, total: int) -> Job:
        """The job was split into `total` chunks."""
        doc = self._db.deal_check_jobs.find_one_and_update(
            {"_id": job_id},
            {"$set": {"total": total}},
            WITHOUT_LIVE,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def chunk_done(
        self, job_id: str, index: int, users: int, deals: int, failed: dict[str, str] | None = None
    ) -> Job:
        """Record one finished chunk (once, however often it ran), and the items that failed.

        A failed item is listed once per job whichever chunks failed on it (`$addToSet`
        of its key; the first reason recorded stays).
        """
        update: dict[str, Any] = {
            "$set": {f"results.{int(index)}": {"users": users, "deals": deals}}
        }
        new = [
            {"item_key": key, "error": error[:ERROR_LENGTH]}
            for key, error in sorted((failed or {}).items())
        ]
        if new:
            job = self.get(job_id)
            new = [f for f in new if f["item_key"] not in job.failed]
        if new:
            update["$push"] = {"failed": {"$each": new}}
        doc = self._db.deal_check_jobs.find_one_and_update(
            {"_id": job_id}, update, WITHOUT_LIVE, return_document=ReturnDocument.AFTER
        )
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def complete(self, job: Job) -> bool:
        """True for the one caller that completes a job whose chunks have all finished.

        Completing releases the job's item changes: a change that came while the check
        ran (a newer version) stays marked for the next scheduled check. A failed item's
        mark stays too, one failure more (see `failed_items`).
        """
        if job.total is None or job.done < job.total:
            return False
        won = self._db.deal_check_jobs.update_one(
            {"_id": job.id, "completed": False},
            {"$set": {"completed": True, "completed_at": datetime.now(UTC)}},
        )
        if not won.modified_count:
            return False
        for item_key, error in job.failed.items():
            self._db.item_changes.update_one(
                {"_id": item_key},
                {
                    "$inc": {"failures": 1},
                    "$set": {"last_error": error, "failed_at": datetime.now(UTC)},
                    "$unset": {"claimed_until": ""},
                    "$setOnInsert": {"version": 0},
                },
                upsert=True,
            )
        for item_key, version in job.changes.items():
            if item_key in job.failed:
                continue
            gone = self._db.item_changes.delete_one({"_id": item_key, "version": version})
            if not gone.deleted_count:  # changed again meanwhile: check it again soon
                self._db.item_changes.update_one(
                    {"_id": item_key}, {"$unset": {"claimed_until": ""}}
                )
        return True


FAILED_LISTED = 50  # failed items the admin page lists, most failures first


async def failed_items(db: AsyncDatabase[Any]) -> list[dict[str, Any]]:
    """Items whose deal check failed (the admin page's list; the web's asyncio client).

    `stopped` says the change is no longer retried (MAX_FAILURES reached).
    """
    cursor = (
        db.item_changes.find({"failures": {"$gte": 1}})
        .sort([("failures", -1), ("_id", 1)])
        .limit(FAILED_LISTED)
    )
    return [
        {
            "item_key": m["_id"],
            "failures": m["failures"],
            "last_error": m.get("last_error", ""),
            "failed_at": m.get("failed_at"),
            "stopped": m["failures"] >= MAX_FAILURES,
        }
        async for m in cursor
    ]
