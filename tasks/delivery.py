"""Delivery housekeeping: publish what a failed publish left in the outbox, give Redis the
token revocations it missed, and write announcements into every user's history."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pymongo.errors import PyMongoError
from redis import RedisError

from notifier.accounts.revocation import sync_uncached_sync
from notifier.realtime.publishing import AnnouncementHistory
from tasks import celery

OUTBOX_AGE = timedelta(seconds=5)  # younger batches may still be publishing

log = logging.getLogger(__name__)


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def republish_pending() -> int:
    """Republish stored notifications whose publish failed (beat runs this often)."""
    res = celery.resources
    sent = res.notifications.republish_pending(OUTBOX_AGE)
    if sent:
        log.info("republished %d notification(s) from the outbox", sent)
    if synced := sync_uncached_sync(res.db, res.redis):
        log.info("cached %d token revocation(s) redis had missed", synced)
    return sent


RETRY = {
    "autoretry_for": (PyMongoError, RedisError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


@celery.app.task(**RETRY)
def store_announcement(announcement: dict[str, Any]) -> int:
    """Hand an announcement's history copies out in chunks of users any worker writes."""
    res = celery.resources
    history = AnnouncementHistory(res.db, res.notifications)
    chunks = 0
    for index, users in enumerate(history.chunks(announcement)):
        store_announcement_chunk.delay(announcement, users, index)
        chunks += 1
    history.planned(announcement, chunks)
    return chunks


@celery.app.task(**RETRY)
def store_announcement_chunk(announcement: dict[str, Any], user_ids: list[str], index: int) -> int:
    """Write (and publish) one chunk's copies; a chunk run twice writes nothing twice."""
    res = celery.resources
    history = AnnouncementHistory(res.db, res.notifications)
    return history.store_chunk(announcement, user_ids, index)
