"""Web Push tasks: thin; deciding and sending live in notifier.push.service.PushService."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import metrics
from notifier.push.service import PushFailed
from tasks import celery

log = logging.getLogger(__name__)


@celery.app.task(
    bind=True,
    autoretry_for=(PushFailed, OSError, PyMongoError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=6,
)
def send_push(self: Task, push_id: str) -> str:
    """Send one planned push to each of its user's browsers (a duplicate task sends nothing).

    Subscriptions that could not be reached are tried again with backoff (about 1, 2, 4,
    ... s, at most 5 min apart); those reached are not sent again. Emails never wait on it.
    """
    last_try = self.request.retries >= (self.max_retries or 0)
    outcome = celery.resources.push.send(push_id, self.request.id, last_try)
    metrics.PUSHES.labels(outcome.split(":")[0]).inc()
    log.info("push %s: %s", push_id, outcome)
    return outcome


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def decide_pushes(notification_ids: list[str] | None = None) -> int:
    """Decide deal pushes whose acknowledgement wait is over, and send those planned.

    With ids: a deal check chunk's notifications, PUSH_ACK_WAIT seconds after storing
    them (a countdown). Without: beat's sweep every few seconds, the backstop.
    """
    return celery.decide_and_send(celery.resources.push, notification_ids, send_push)


def push_later(notifications: list[dict[str, Any]]) -> None:
    """Have the pushes of these (push-pending) deal notifications decided after the wait."""
    ids = [str(n["_id"]) for n in notifications if n.get("push_pending")]
    if ids:
        wait = celery.resources.settings.push_ack_wait
        decide_pushes.apply_async(args=[ids], countdown=wait)


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def push_announcement(announcement_id: str, after_user: str | None = None) -> int:
    """Push an announcement to the subscribed users who want it, a batch per task."""
    due, more = celery.resources.push.plan_announcement(announcement_id, after_user)
    for push_id in due:
        send_push.delay(push_id)
    if more is not None:
        push_announcement.delay(announcement_id, more)
    return len(due)
