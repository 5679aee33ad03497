"""Email tasks: thin; planning and sending live in notifier.email.service.EmailService."""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import metrics
from tasks import celery

log = logging.getLogger(__name__)


@celery.app.task(
    bind=True,
    autoretry_for=(smtplib.SMTPException, OSError, PyMongoError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=10,
)
def send_email(self: Task, email_id: str) -> str:
    """Send one planned email (idempotent: a duplicate or late task sends nothing)."""
    try:
        outcome = celery.resources.email.send(email_id, self.request.id)
    except Exception:
        metrics.EMAILS_FAILED.inc()
        raise
    if outcome == "sent":
        metrics.EMAILS_SENT.inc()
    log.info("email %s: %s", email_id, outcome)
    return outcome


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def decide_deal_emails(notification_ids: list[str] | None = None) -> int:
    """Decide deal emails whose acknowledgement wait is over, and send those due.

    With ids: a deal check chunk's notifications, EMAIL_ACK_WAIT seconds after storing
    them (a countdown). Without: beat's sweep every few seconds, the backstop for a
    chunk whose delayed task was lost.
    """
    return celery.decide_and_send(celery.resources.email, notification_ids, send_email)


def decide_later(notifications: list[dict[str, Any]]) -> None:
    """Have the emails of these (still pending) deal notifications decided after the wait."""
    ids = [str(n["_id"]) for n in notifications]
    if ids:
        wait = celery.resources.settings.email_ack_wait
        decide_deal_emails.apply_async(args=[ids], countdown=wait)


@celery.app.task(autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=3)
def send_due_emails() -> int:
    """Decide forgotten emails, plan digests, send what quiet hours held (beat runs this)."""
    service = celery.resources.email
    late = set(service.decide_due())  # whatever the frequent sweep has not reached yet
    due = sorted(late | set(service.plan_digests()) | set(service.due()))
    for email_id in due:
        send_email.delay(email_id)
    return len(due)
