"""Deal notifications whose email or push is decided once their acknowledgement wait is over,
and the planned emails and pushes that tasks then claim to send.

A deal check stores a deal with a pending flag (`email_pending`, `push_pending`) for each
channel that waits to see whether a page acknowledged it. Both channels find and work
through the waiting ones the same way, here; each says what deciding one means (`decide`).
What they decide to send is planned as a document that one task at a time claims.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.synchronous.collection import Collection
from pymongo.synchronous.database import Database

from notifier.storage.batches import find_in

DECIDE_BATCH = 500  # deal notifications decided per query


class AfterAckWait:
    """Deciding a channel's pending deal notifications: by id, or every one whose wait is over."""

    PENDING: ClassVar[str]  # the notification's flag while this channel's decision waits
    _db: Database[Any]

    def ack_wait(self) -> float:
        """Seconds a notification waits for a page's acknowledgement before it is decided."""
        raise NotImplementedError

    def decide(self, notifications: list[dict[str, Any]]) -> list[str]:
        """Decide these notifications now; the ids of what is to be sent."""
        raise NotImplementedError

    def undecided(self, older_than: timedelta | None = None) -> list[dict[str, Any]]:
        """Notifications still waiting for this channel's decision, oldest first."""
        wait = older_than if older_than is not None else timedelta(seconds=self.ack_wait())
        query = {self.PENDING: True, "created_at": {"$lt": datetime.now(UTC) - wait}}
        found = self._db.notifications.find(query).sort("created_at", ASCENDING)
        return list(found.limit(DECIDE_BATCH))

    def decide_due(self, max_batches: int = 20) -> list[str]:
        """Decide every notification whose wait is over, a batch at a time.

        What beat runs every few seconds, and the backstop for a decision whose worker
        died or whose delayed task was lost: a burst of deals is worked through in one run.
        """
        due: list[str] = []
        for _ in range(max_batches):
            batch = self.undecided()
            due += self.decide(batch)
            if len(batch) < DECIDE_BATCH:
                break
        return due

    def decide_ids(self, notification_ids: list[str]) -> list[str]:
        """Decide these notifications (those still pending)."""
        ids = [ObjectId(i) for i in notification_ids if ObjectId.is_valid(i)]
        pending = find_in(self._db.notifications, "_id", ids, {self.PENDING: True})
        return self.decide(list(pending))

    def decide_now(self, notification_ids: list[str] | None) -> list[str]:
        """A chunk's notifications (its delayed task), or, without ids, every one due (beat)."""
        return self.decide_ids(notification_ids) if notification_ids else self.decide_due()


def claim(
    planned: Collection[Any],
    planned_id: str,
    task_id: str,
    lease: float,
    ready: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Take a planned email or push for this task to send; None if it is not to be sent now.

    It is taken when pending (and `ready`), when this task holds it already (a retry),
    or when another task's claim is older than `lease` seconds (that task died).
    """
    now = datetime.now(UTC)
    return planned.find_one_and_update(
        {
            "_id": planned_id,
            "$or": [
                {"status": "pending", **(ready or {})},
                {"status": "sending", "task_id": task_id},
                {"status": "sending", "claimed_at": {"$lt": now - timedelta(seconds=lease)}},
            ],
        },
        {"$set": {"status": "sending", "task_id": task_id, "claimed_at": now}},
        return_document=ReturnDocument.AFTER,
    )
