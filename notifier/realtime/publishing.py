"""Store, then publish: notifications written to MongoDB and then put on the bus.

The storage is notifier.notifications' (the writer, the batch writes, the outbox); the
bus and the payloads are this package's. Publishing lives here, not beside the storage,
so that `notifications` never imports `realtime` (the live path reads notifications, the
other way round): a publish that fails leaves the notification in the outbox, and the
sweep (`republish_pending`, `republish_batches`) puts it on the bus later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.synchronous.database import Database
from redis import RedisError

from notifier.kinds import NotificationType
from notifier.notifications import state
from notifier.notifications.batch import NewNotification, Stored, store_batch
from notifier.notifications.store import NotificationWriter, to_json
from notifier.realtime.bus import Publisher
from notifier.realtime.render import PayloadRenderer
from notifier.storage.batches import find_in

log = logging.getLogger(__name__)


class NotificationService:
    """Write a notification to MongoDB, then publish it: MongoDB first, always."""

    def __init__(
        self,
        writer: NotificationWriter,
        publisher: Publisher,
        renderer: PayloadRenderer | None = None,
    ) -> None:
        self._writer = writer
        self._publisher = publisher
        # Both socket formats are rendered here, once, so web processes only forward them.
        self._renderer = renderer or PayloadRenderer()

    @property
    def publisher(self) -> Publisher:
        """Where this service publishes (batches publish there too)."""
        return self._publisher

    @property
    def renderer(self) -> PayloadRenderer:
        """What renders the events it publishes (batches render with it too)."""
        return self._renderer

    def notify(
        self,
        user_id: str,
        type: NotificationType,
        data: dict[str, Any],
        *,
        dedupe_key: str | None = None,
        deal_keys: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Store and publish one notification; None when it was stored before."""
        doc = self._writer.create(user_id, type, data, dedupe_key=dedupe_key, deal_keys=deal_keys)
        if doc is not None:
            self.publish(doc)
        return doc

    def publish(self, doc: dict[str, Any]) -> bool:
        """Publish a stored notification; on failure it stays in the outbox for the sweep."""
        notification = to_json(doc)
        unread = self._writer.unread_count(doc["user_id"])
        event = self._renderer.notification_event(doc["user_id"], notification, unread)
        try:
            self._publisher.publish(event)
        except (RedisError, OSError) as e:
            log.warning(
                "publishing notification %s of %s failed (the sweep retries): %s",
                notification["id"],
                doc["user_id"],
                e,
            )
            return False
        self._writer.mark_published(doc)
        return True

    def unread_count(self, user_id: str) -> int:
        """The user's unread count (for events published outside the writer's path)."""
        return self._writer.unread_count(user_id)

    def republish_pending(self, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Publish what a failed publish left in the outbox; returns how many went out."""
        return sum(self.publish(doc) for doc in self._writer.unpublished(older_than))


def republish_batches(
    db: Database[Any], service: NotificationService, older_than: timedelta
) -> int:
    """Publish the notifications of batches whose publish failed; returns how many."""
    cutoff = datetime.now(UTC) - older_than
    sent = 0
    for record in list(db.outbox.find({"created_at": {"$lt": cutoff}}).limit(100)):
        docs = sorted(find_in(db.notifications, "_id", record["ids"]), key=lambda d: d["seq"])
        events = [
            service.renderer.notification_event(
                d["user_id"], to_json(d), service.unread_count(d["user_id"])
            )
            for d in docs
        ]
        service.publisher.publish_many(events)  # raises while Redis is down: kept for later
        db.outbox.delete_one({"_id": record["_id"]})
        sent += len(events)
    return sent


def notify_many(
    db: Database[Any], service: NotificationService, wanted: list[NewNotification]
) -> Stored:
    """Store one notification each for many users, then publish them in one pipeline.

    Storage first, always: what fails to publish stays in the outbox for the sweep.
    """
    stored = store_batch(db, wanted)
    if not stored.docs:
        return stored
    events = [
        service.renderer.notification_event(
            doc["user_id"], to_json(doc), stored.unread[doc["user_id"]]
        )
        for doc in stored.docs
    ]
    try:
        service.publisher.publish_many(events)
    except (RedisError, OSError) as e:
        log.warning("publishing %d notification(s) failed (the sweep retries): %s", len(events), e)
        return stored
    db.outbox.delete_one({"_id": stored.outbox_id})
    return stored


HISTORY_CHUNK = 1000  # users whose history copies one task writes in one batch


class AnnouncementHistory:
    """Copies of an announcement in every user's history (workers, synchronous client).

    Every user whose account existed when it was made gets one, whether or not a page of
    theirs was open: History is where a user who was away finds what was announced. The
    copy's dedupe key is the announcement's id, so a chunk that runs twice (its worker
    died) writes nothing twice.
    """

    def __init__(self, db: Database[Any], notifications: NotificationService) -> None:
        self._db = db
        self._notifications = notifications

    def chunks(
        self, announcement: dict[str, Any], size: int = HISTORY_CHUNK
    ) -> Iterator[list[str]]:
        """The ids of the users who existed when it was made, in id order, chunk by chunk."""
        made = datetime.fromisoformat(str(announcement["created_at"]).replace("Z", "+00:00"))
        # An ObjectId starts with its creation second; `created_at` (users made since it was
        # stored) tells the accounts of that second apart.
        newest = ObjectId.from_datetime(made + timedelta(seconds=1))
        cursor = self._db.users.find({"_id": {"$lt": newest}}, {"created_at": 1}).sort("_id", 1)
        chunk: list[str] = []
        for user in cursor:
            created = state.utc(user.get("created_at"))
            if created is not None and created > made:
                continue
            chunk.append(str(user["_id"]))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def store_chunk(self, announcement: dict[str, Any], user_ids: list[str], index: int) -> int:
        """Store (and publish) these users' copies in one batch, then note the chunk done;
        returns how many were new."""
        data = {
            "message": announcement["message"],
            "severity": announcement["severity"],
            "announcement_id": str(announcement["id"]),
        }
        dedupe = f"announcement:{announcement['id']}"
        wanted = [NewNotification(u, NotificationType.SYSTEM, data, dedupe) for u in user_ids]
        stored = len(notify_many(self._db, self._notifications, wanted).docs)
        self._progress(announcement, {"$addToSet": {"history_chunks_done": index}})
        return stored

    def planned(self, announcement: dict[str, Any], chunks: int) -> None:
        """Note how many chunks its copies take: it is in every history once all are done
        (`history_done`)."""
        self._progress(announcement, {"$set": {"history_chunks": chunks}})

    def _progress(self, announcement: dict[str, Any], update: dict[str, Any]) -> None:
        if ObjectId.is_valid(str(announcement["id"])):
            self._db.announcements.update_one({"_id": ObjectId(str(announcement["id"]))}, update)
