"""Delivery housekeeping: publish what a failed publish left in the outbox."""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from tasks import celery

log = logging.getLogger(__name__)


@celery.app.task(autoretry_for=(PyMongoError,), retry_backoff=True, max_retries=3)
def republish_pending() -> int:
    """Republish stored notifications whose publish failed (beat runs this often)."""
    sent = celery.resources.notifications.republish_pending()
    if sent:
        log.info("republished %d notification(s) from the outbox", sent)
    return sent
