"""Email tasks: thin; planning and sending live in notifier.email.service.EmailService."""

from __future__ import annotations

import logging
import smtplib

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
def send_due_emails() -> int:
    """Decide forgotten emails, plan digests, send what quiet hours held (beat runs this)."""
    service = celery.resources.email
    # Deal notifications whose task died before deciding their email are decided now.
    late = {email_id for doc in service.undecided() if (email_id := service.plan_for_deal(doc))}
    due = sorted(late | set(service.plan_digests()) | set(service.due()))
    for email_id in due:
        send_email.delay(email_id)
    return len(due)
