"""Deal checks as jobs: what changed since the last scheduled check, and chunk bookkeeping.

A price change marks its item (`item_changes`, a version per item). The scheduled check
takes the marked items, plus those whose price just expired, and checks only those: with
nothing changed it costs two small reads, whatever the number of watches.

A check is a job split into chunks of users that any worker may run. The job document
records each finished chunk by its index (so a chunk run twice, after a worker died,
counts once); whoever records the last one, or sets the total after the last one
finished, completes the job exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.synchronous.database import Database

from notifier.storage.writes import Upsert

CLAIM = timedelta(minutes=10)  # a claimed change is left to its check for this long
SCHEDULE_ID = "scheduled"


def changed(item_key: str, now: datetime) -> Upsert:
    """The write that marks an item's price as changed (with the price's own writes)."""
    return Upsert(
        "item_changes",
        {"_id": item_key},
        {"$inc": {"version": 1}, "$set": {"changed_at": now}, "$unset": {"claimed_until": ""}},
    )


@dataclass
class Job:
    """A deal check's bookkeeping document, as read back."""

    id: str
    requested_by: str | None
    item_keys: list[str] | None
    changes: dict[str, int]  # item -> the change version this check covers
    total: int | None
    results: dict[str, dict[str, int]] = field(default_factory=dict)

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
            doc.get("changes") or {},
            doc.get("total"),
            doc.get("results") or {},
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
        query: dict[str, Any] = {} if item_keys is None else {"_id": {"$in": item_keys}}
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
                    "changes": changes,
                    "created_at": datetime.now(UTC),
                    "results": {},
                    "completed": False,
                }
            },
            upsert=True,
        )

    def get(self, job_id: str) -> Job:
        """A job as it stands."""
        doc = self._db.deal_check_jobs.find_one({"_id": job_id})
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def planned(self, job_id: str, total: int) -> Job:
        """The job was split into `total` chunks."""
        doc = self._db.deal_check_jobs.find_one_and_update(
            {"_id": job_id}, {"$set": {"total": total}}, return_document=ReturnDocument.AFTER
        )
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def chunk_done(self, job_id: str, index: int, users: int, deals: int) -> Job:
        """Record one finished chunk (once, however often it ran)."""
        doc = self._db.deal_check_jobs.find_one_and_update(
            {"_id": job_id},
            {"$set": {f"results.{index}": {"users": users, "deals": deals}}},
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None, "start() records the job first"
        return Job.from_doc(doc)

    def complete(self, job: Job) -> bool:
        """True for the one caller that completes a job whose chunks have all finished.

        Completing releases the job's item changes: a change that came while the check
        ran (a newer version) stays marked for the next scheduled check.
        """
        if job.total is None or job.done < job.total:
            return False
        won = self._db.deal_check_jobs.update_one(
            {"_id": job.id, "completed": False},
            {"$set": {"completed": True, "completed_at": datetime.now(UTC)}},
        )
        if not won.modified_count:
            return False
        for item_key, version in job.changes.items():
            gone = self._db.item_changes.delete_one({"_id": item_key, "version": version})
            if not gone.deleted_count:  # changed again meanwhile: check it again soon
                self._db.item_changes.update_one(
                    {"_id": item_key}, {"$unset": {"claimed_until": ""}}
                )
        return True
