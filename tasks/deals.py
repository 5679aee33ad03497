"""Deal check tasks: thin; the logic is notifier.shopping.deals and .checks.

`check_deals` plans a check and hands its chunks of users to `check_deal_chunk`, which
any worker runs; the chunk that finishes last (or the planner, if every chunk finished
before it counted them) completes the job. `check_changes` is beat's: it checks only
items whose price changed or just expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import metrics
from notifier.kinds import NotificationType
from notifier.realtime.presence import online_now, online_users
from notifier.shopping.checks import DealCheckJobs, Job
from notifier.shopping.deals import DealCheck, memory_from_text, memory_to_text
from tasks import celery
from tasks.email import decide_later, send_email
from tasks.push import push_later

log = logging.getLogger(__name__)

RETRY = {
    "autoretry_for": (PyMongoError, RedisError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 8,
}
FULL_CHECK_PAST = 1000  # more changed items than this: stream every watch instead
# Online users up to this many are listed, and a check finds its live watchers from their
# watches (a read per 100 of them); with more, it asks presence of every watcher instead.
LIST_ONLINE_UP_TO = 10_000
REST_AT_THE_LATEST = 120  # seconds after the live chunks were handed out


@celery.app.task(**RETRY)
def check_changes() -> int:
    """Check the items whose price changed or expired since the last run (beat runs this)."""
    items, claimed = DealCheckJobs(celery.resources.db).changes_to_check()
    if items:
        check_deals.delay(item_keys=items, changes=claimed)
    return len(items)


@celery.app.task(bind=True, **RETRY)
def check_deals(
    self: Task,
    requested_by: str | None = None,
    item_keys: list[str] | None = None,
    changes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Split a check (of every watch, or of `item_keys`) into chunks for the workers."""
    res = celery.resources
    jobs = DealCheckJobs(res.db)
    job_id = self.request.id
    if changes is None and item_keys is not None:
        changes = jobs.claim(item_keys)  # the scheduled check need not look at them again
    if item_keys is not None and len(item_keys) > FULL_CHECK_PAST:
        item_keys = None
    jobs.start(job_id, requested_by, item_keys, changes or {})
    check = DealCheck(res.db, res.notifications, res.settings.deal_check_chunk_users)
    online = _everyone_online()
    if online is None:  # too many to list: ask presence of each watcher as they stream by
        total = _hand_out(job_id, 0, check.chunks(item_keys, online=_online), item_keys)
        _planned(jobs, job_id, total)
        return {"job_id": job_id, "chunks": total}
    live = check.live_chunks(online, item_keys)
    if not live:
        total = _hand_out(job_id, 0, check.rest_chunks(item_keys), item_keys)
        _planned(jobs, job_id, total)
        return {"job_id": job_id, "chunks": total}
    # The other watchers are read once the live chunks are done (see check_deal_chunk):
    # streaming them now would hold the database while the live ones are stored (100,000
    # watchers are about 12 s of reads on the embedded store).
    jobs.live_planned(job_id, [u for users in live for u in users])
    total = _hand_out(job_id, 0, live, item_keys, live_chunks=len(live))
    # The backstop: should a live chunk never finish (a bug, an outage past its retries),
    # the rest is planned anyway; whichever comes first plans it, the other does nothing.
    plan_rest.apply_async((job_id, total, item_keys), countdown=REST_AT_THE_LATEST)
    return {"job_id": job_id, "chunks": total}


@celery.app.task(**RETRY)
def remember_watches(memory: str) -> int:
    """What a live chunk's watches were told, written once the live chunks were handed out."""
    res = celery.resources
    updates = memory_from_text(memory)
    DealCheck(res.db, res.notifications).remember(updates)
    return len(updates)


@celery.app.task(bind=True, **RETRY)
def plan_rest(
    self: Task, job_id: str, first_index: int, item_keys: list[str] | None
) -> dict[str, Any]:
    """Hand out the chunks of every watcher but the job's live ones, then count them all."""
    res = celery.resources
    jobs = DealCheckJobs(res.db)
    if not jobs.claim_rest(job_id, self.request.id):
        return {"job_id": job_id, "chunks": None}  # planned by the other one
    check = DealCheck(res.db, res.notifications, res.settings.deal_check_chunk_users)
    rest = check.rest_chunks(item_keys, set(jobs.live_users(job_id)))
    total = _hand_out(job_id, first_index, rest, item_keys)
    _planned(jobs, job_id, total)
    return {"job_id": job_id, "chunks": total}


def _hand_out(
    job_id: str,
    first_index: int,
    chunks: Iterable[list[str]],
    item_keys: list[str] | None,
    live_chunks: int = 0,
) -> int:
    """Queue a chunk task for each chunk, numbered from `first_index`; the next free index."""
    index = first_index
    for users in chunks:
        check_deal_chunk.delay(job_id, index, users, item_keys, live_chunks)
        index += 1
    return index


def _planned(jobs: DealCheckJobs, job_id: str, total: int) -> None:
    """Every chunk is queued: count them, and complete the job if they all finished."""
    job = jobs.planned(job_id, total)
    _progress(job)
    _finish(jobs, job)


@celery.app.task(**RETRY)
def check_deal_chunk(
    job_id: str,
    index: int,
    user_ids: list[str],
    item_keys: list[str] | None,
    live_chunks: int = 0,
) -> dict[str, int]:
    """Check one chunk of users and notify them in one batch; idempotent.

    One of a job's `live_chunks` (its online watchers, handed out first): the one that
    finishes the last of them has the rest of the job planned.
    """
    res = celery.resources
    with metrics.DEAL_CHECK_DURATION.time():
        check = DealCheck(
            res.db,
            res.notifications,
            window_days=res.settings.price_window_days,
            memory_days=res.settings.alert_memory_days,
        )
        # A live chunk leaves its watches' memory for later: the other live chunks are
        # still storing (about a third of a chunk's writes on the embedded store).
        result = check.run_chunk(user_ids, item_keys, remember_later=live_chunks > 0)
    metrics.DEALS_FOUND.inc(result.deals_found)
    metrics.DEAL_CHECK_ITEM_FAILURES.inc(len(result.failed))
    pending = [n for n in result.notifications if n.get("email_pending")]
    for email_id in res.email.plan_for_deals(pending):
        send_email.delay(email_id)  # mode always: at once
    # Mode offline: once EMAIL_ACK_WAIT has shown whether any page acknowledged them.
    # (decide_deal_emails skips those decided already.)
    decide_later(pending)
    # Subscribers' deals: pushed once PUSH_ACK_WAIT has shown that no page acknowledged them.
    push_later(result.notifications)
    jobs = DealCheckJobs(res.db)
    job = jobs.chunk_done(job_id, index, result.users_notified, result.deals_found, result.failed)
    _progress(job)
    if result.memory:
        remember_watches.delay(memory_to_text(result.memory))
    if live_chunks and jobs.rest_due(job, live_chunks):
        plan_rest.delay(job_id, live_chunks, item_keys)
    _finish(jobs, job)
    return {"users_notified": result.users_notified, "deals_found": result.deals_found}


def _online(users: list[str]) -> set[str]:
    """Which of these users have a socket open anywhere (presence); none if Redis is down."""
    try:
        return online_users(celery.resources.redis, users)
    except (RedisError, OSError):
        return set()  # everyone in user order: slower for the live ones, nothing lost


def _everyone_online() -> list[str] | None:
    """Every user online, if there are few enough to list; None if not, or Redis is down."""
    try:
        return online_now(celery.resources.redis, LIST_ONLINE_UP_TO)
    except (RedisError, OSError):
        return None


def _progress(job: Job) -> None:
    """The requester's tabs hear how far the check has got (live only, not stored).

    Chunks finish on many threads and workers at once: each publishes under a short
    per-job lock what the job document says *then*, so the figures never go backwards.
    """
    if not (job.requested_by and job.total):
        return
    res = celery.resources
    try:
        with res.redis.lock(f"notifier:lock:job-progress:{job.id}", timeout=5, blocking_timeout=5):
            now = DealCheckJobs(res.db).get(job.id)
            res.report_progress(
                job.requested_by,
                {"job": "deal-check", "job_id": job.id, "done": now.done, "total": job.total},
            )
    except (RedisError, OSError):
        pass  # progress is a courtesy; the job-complete notification is stored


def _finish(jobs: DealCheckJobs, job: Job) -> None:
    """Complete the job once every chunk is done: the requester is told what it found."""
    if not jobs.complete(job):
        return
    users, deals = job.totals()
    summary = f"{deals} new deal(s) for {users} user(s)"
    log.info("deal check %s: %s in %d chunk(s)", job.id, summary, job.total)
    if job.requested_by:
        celery.resources.notifications.notify(
            job.requested_by,
            NotificationType.JOB,
            {"job": "deal-check", "job_id": job.id, "status": "succeeded", "summary": summary},
            dedupe_key=f"job:{job.id}",
        )
