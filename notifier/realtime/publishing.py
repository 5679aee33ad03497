"""Store, then publish: notifications written to MongoDB and then put on the bus.

The storage is notifier.notifications' (the writer, the batch writes, the outbox); the
bus and the payloads are this package's. Publishing lives here, not beside the storage,
so that `notifications` never imports `realtime` (the live path reads notifications, the
other way round): a publish that fails leaves the notifications in the outbox, and the
sweep (`republish_pending`) puts them on the bus later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.synchronous.database import Database
from redis import RedisError

from notifier.kinds import NotificationType
from notifier.notifications import state
from notifier.notifications.batch import NewNotification, Stored
from notifier.notifications.store import NotificationWriter, to_json
from notifier.realtime.bus import Publisher
from notifier.realtime.render import PayloadRenderer

log = logging.getLogger(__name__)

SWEEP_MOST = 1000  # notifications one sweep publishes at the most


class NotificationService:
    """Write notifications to MongoDB, then publish them: MongoDB first, always.

    One path for one notification and for many: a notification is a batch of one.
    """

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
        """Where this service publishes."""
        return self._publisher

    @property
    def renderer(self) -> PayloadRenderer:
        """What renders the events it publishes."""
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
        wanted = NewNotification(user_id, NotificationType(type), data, dedupe_key, deal_keys)
        stored = self.notify_many([wanted])
        return stored.docs[0] if stored.docs else None

    def notify_many(self, wanted: list[NewNotification]) -> Stored:
        """Store one notification each for many users, then publish them in one pipeline.

        What fails to publish stays in the outbox for the sweep.
        """
        stored = self._writer.store(wanted)
        try:
            self._publish(stored.outbox_id, stored.docs, stored.unread)
        except (RedisError, OSError) as e:
            log.warning(
                "publishing %d notification(s) failed (the sweep retries): %s", len(stored.docs), e
            )
        return stored

    def republish_pending(self, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Publish what a failed publish or a dead worker left in the outbox; returns how
        many went out. Raises while Redis is down: the rest stays listed for later."""
        sent = 0
        for outbox_id, docs in self._writer.waiting(older_than):
            users = {d["user_id"] for d in docs}
            self._publish(outbox_id, docs, {u: self._writer.unread_count(u) for u in users})
            sent += len(docs)
            if sent >= SWEEP_MOST:  # the rest at the next sweep
                break
        return sent

    def _publish(
        self, outbox_id: ObjectId, docs: list[dict[str, Any]], unread: dict[str, int]
    ) -> None:
        """Publish stored notifications in one round trip, then take them out of the outbox
        (with none, that is all: a batch whose every notification was stored before)."""
        self._publisher.publish_many(
            [
                self._renderer.notification_event(d["user_id"], to_json(d), unread[d["user_id"]])
                for d in docs
            ]
        )
        self._writer.published(outbox_id)


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
        stored = len(self._notifications.notify_many(wanted).docs)
        self._progress(announcement, {"$addToSet": {"history_chunks_done": index}})
        return stored

    def planned(self, announcement: dict[str, Any], chunks: int) -> None:
        """Note how many chunks its copies take: it is in every history once all are done
        (`history_done`)."""
        self._progress(announcement, {"$set": {"history_chunks": chunks}})

    def _progress(self, announcement: dict[str, Any], update: dict[str, Any]) -> None:
        if ObjectId.is_valid(str(announcement["id"])):
            self._db.announcements.update_one({"_id": ObjectId(str(announcement["id"]))}, update)
