"""Delivery housekeeping: publish what a failed publish left in the outbox."""

from __future__ import annotations

import logging
from datetime import timedelta

from pymongo.errors import PyMongoError
from redis import RedisError

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
    return sent
