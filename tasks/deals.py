"""The deal check task: thin, the logic is notifier.shopping.deals.DealCheck."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import metrics
from notifier.shopping.deals import LOCK_NAME, DealCheck
from tasks import celery
from tasks.email import send_email

log = logging.getLogger(__name__)


@celery.app.task(
    bind=True,
    autoretry_for=(PyMongoError, RedisError),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def check_deals(
    self: Task, requested_by: str | None = None, item_keys: list[str] | None = None
) -> dict[str, Any]:
    """Run the deal check; tell `requested_by` (a user id) when it is done."""
    res = celery.resources
    # A worker that dies holding the lock holds up checks until it expires.
    hold = res.settings.deal_check_lock_seconds
    with res.redis.lock(LOCK_NAME, timeout=hold, blocking_timeout=hold):
        with metrics.DEAL_CHECK_DURATION.time():
            result = DealCheck(res.db, res.notifications).run(item_keys)
    metrics.DEALS_FOUND.inc(result.deals_found)
    log.info("deal check: %s", result.summary())
    for doc in result.notifications:
        email_id = res.email.plan_for_deal(doc)
        if email_id:
            send_email.delay(email_id)
    if requested_by:
        res.notifications.notify(
            requested_by,
            "job-complete",
            {
                "job": "deal-check",
                "job_id": self.request.id,
                "status": "succeeded",
                "summary": result.summary(),
            },
            dedupe_key=f"job:{self.request.id}",
        )
    return {"users_notified": result.users_notified, "deals_found": result.deals_found}
