"""Delivery housekeeping: publish what a failed publish left in the outbox, and give Redis
the token revocations it missed."""

from __future__ import annotations

import logging
from datetime import timedelta

from pymongo.errors import PyMongoError
from redis import RedisError

from notifier.accounts.revocation import sync_uncached_sync
from notifier.notifications.batch import republish_batches
from tasks import celery

OUTBOX_AGE = timedelta(seconds=5)  # younger batches may still be publishing

log = logging.getLogger(__name__)


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def republish_pending() -> int:
    """Republish stored notifications whose publish failed (beat runs this often)."""
    res = celery.resources
    sent = res.notifications.republish_pending()
    sent += republish_batches(res.db, res.notifications, OUTBOX_AGE)
    if sent:
        log.info("republished %d notification(s) from the outbox", sent)
    if synced := sync_uncached_sync(res.db, res.redis):
        log.info("cached %d token revocation(s) redis had missed", synced)
    return sent
