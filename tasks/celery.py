"""The Celery app: `celery -A tasks worker` and `celery -A tasks beat`."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from functools import cached_property
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import setup_logging, worker_process_init
from pymongo import MongoClient
from pymongo.synchronous.database import Database

from notifier import logs
from notifier.email.service import EmailService
from notifier.notifications.decisions import AfterAckWait
from notifier.notifications.store import NotificationWriter
from notifier.push.service import PushService
from notifier.realtime import progress
from notifier.realtime.bus import make_publisher
from notifier.realtime.publishing import NotificationService
from notifier.settings import ConfigurationError, Settings
from tasks import metrics

try:
    settings = Settings.from_env()
except ConfigurationError as e:
    sys.exit(f"notifier: {e}")

OUTBOX_SWEEP_INTERVAL = 10.0
EMAIL_SWEEP_INTERVAL = 60.0  # digests, held emails, and any decision left behind
# Offline deal emails are decided this often once their EMAIL_ACK_WAIT is over: a deal
# is emailed at most this much after the wait (a chunk's delayed task is usually first).
EMAIL_DECIDE_INTERVAL = 5.0
# Deal pushes are decided this often once their PUSH_ACK_WAIT is over (the backstop: a
# chunk's delayed task is usually first).
PUSH_DECIDE_INTERVAL = 5.0


def every(seconds: float, task: str) -> dict[str, Any]:
    """A beat schedule entry: `task` every `seconds`."""
    return {"task": task, "schedule": timedelta(seconds=seconds)}


app = Celery(
    "notifier",
    broker=settings.redis_url,
    include=[
        "tasks.deals",
        "tasks.delivery",
        "tasks.email",
        "tasks.feed",
        "tasks.prices",
        "tasks.push",
    ],
)
app.conf.update(
    task_ignore_result=True,
    # A task is acknowledged only when done; a worker killed mid-task hands it to another.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # A task whose worker died is handed out again after the visibility timeout; the sweep
    # that finds such tasks runs about as often as that timeout allows (kombu's default
    # would look only every 100 s).
    broker_transport_options={
        "visibility_timeout": settings.broker_visibility_timeout,
        "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout // 2)),
        "unacked_restore_throttle": 1 if settings.broker_visibility_timeout < 100 else 10,
    },
    timezone="UTC",
    beat_schedule={
        # Only what changed: items whose price was set or expired since the last run.
        "check-changes": every(settings.deal_check_interval, "tasks.deals.check_changes"),
        "send-due-emails": every(EMAIL_SWEEP_INTERVAL, "tasks.email.send_due_emails"),
        "decide-deal-emails": every(EMAIL_DECIDE_INTERVAL, "tasks.email.decide_deal_emails"),
        "decide-pushes": every(PUSH_DECIDE_INTERVAL, "tasks.push.decide_pushes"),
        "republish-pending": every(OUTBOX_SWEEP_INTERVAL, "tasks.delivery.republish_pending"),
    },
)
if settings.demo_feed_interval > 0:
    app.conf.beat_schedule["demo-price-feed"] = every(
        settings.demo_feed_interval, "tasks.feed.demo_price_feed"
    )


class Resources:
    """The clients a worker process uses, created on first use after the pool forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()

    @cached_property
    def mongo(self) -> MongoClient[dict[str, Any]]:
        """The synchronous MongoDB client (PyMongo), one per worker process."""
        return MongoClient(self.settings.mongodb_uri)

    @property
    def db(self) -> Database[dict[str, Any]]:
        """The notifier database named in MONGODB_URI."""
        return self.mongo.get_default_database("notifier")

    @cached_property
    def redis(self) -> redis.Redis:
        """The synchronous Redis client for publishing and locks."""
        return redis.Redis.from_url(self.settings.redis_url)

    @cached_property
    def email(self) -> EmailService:
        """Planning and sending email."""
        return EmailService(self.settings, self.db, self.redis)

    @cached_property
    def push(self) -> PushService:
        """Deciding and sending Web Push."""
        return PushService(self.settings, self.db)

    @cached_property
    def notifications(self) -> NotificationService:
        """Store-then-publish for notifications."""
        return NotificationService(
            NotificationWriter(self.db), make_publisher(self.settings, self.redis)
        )

    def report_progress(self, user_id: str, job: dict[str, Any]) -> None:
        """Tell the user's tabs how far a job is (`{"job", "job_id", "done", "total"}`).

        A courtesy: if Redis cannot take it, the job goes on, and its job-complete
        notification is stored.
        """
        try:
            progress.report(
                self.redis, self.notifications.publisher, self.notifications.renderer, user_id, job
            )
        except (redis.RedisError, OSError):
            pass


resources = Resources(settings)


@worker_process_init.connect
def _fresh_clients_after_fork(**_: Any) -> None:
    global resources
    resources = Resources(settings)


metrics.install(settings)

if settings.production:
    # One JSON object per line, as the web process writes (Celery's own format otherwise).
    @setup_logging.connect(weak=False)
    def _json_logs(**_: Any) -> None:
        logs.configure(production=True)


def decide_and_send(service: AfterAckWait, notification_ids: list[str] | None, send: Task) -> int:
    """Decide a channel's waiting deals (these, or every one due); queue `send` for each due."""
    due = service.decide_now(notification_ids)
    for planned_id in due:
        send.delay(planned_id)
    return len(due)
