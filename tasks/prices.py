"""Price imports: a CSV applied by a worker, reported to the uploader as job-complete."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import validation
from notifier.errors import InputError
from notifier.kinds import NotificationType
from notifier.realtime.progress import Every
from notifier.shopping.prices import PriceInput, parse_price_csv, record_price
from notifier.storage.writes import apply_bulk
from tasks import celery
from tasks.deals import check_deals

log = logging.getLogger(__name__)
REPORTED_REJECTIONS = 50
ROWS_PER_BATCH = 50  # rows written per bulk write (and the finest step of the progress bar)


def _price_id(job_id: str, line: int) -> str:
    """The same id for a line however often the job runs, so its history entry is one."""
    return hashlib.sha256(f"{job_id}:{line}".encode()).hexdigest()[:24]


def _apply(job_id: str, requested_by: str, rows: list[tuple[int, PriceInput]]) -> None:
    """Apply the rows in order, a batch at a time, telling the uploader's tabs how far it is."""
    res = celery.resources
    every = Every()
    for start in range(0, len(rows), ROWS_PER_BATCH):
        batch = rows[start : start + ROWS_PER_BATCH]
        writes = [
            w
            for line, price in batch
            for w in record_price(price, price_id=_price_id(job_id, line))[1]
        ]
        apply_bulk(res.db, writes)
        done = start + len(batch)
        if every.due(last=done == len(rows)):
            res.report_progress(
                requested_by,
                {"job": "price-import", "job_id": job_id, "done": done, "total": len(rows)},
            )


@celery.app.task(
    bind=True, autoretry_for=(PyMongoError, RedisError), retry_backoff=True, max_retries=5
)
def import_prices(self: Task, text: str, requested_by: str, filename: str = "prices.csv") -> None:
    """Apply the good rows (upserts, so a retry applies nothing twice) and report."""
    res = celery.resources
    report: dict[str, Any] = {"job": "price-import", "job_id": self.request.id, "file": filename}
    try:
        parsed = parse_price_csv(text)
    except InputError as e:
        report |= {
            "status": "failed",
            "applied": 0,
            "rejected": [],
            "summary": f"nothing applied: {e.message}",
        }
    else:
        _apply(self.request.id, requested_by, parsed.rows)
        items = sorted({validation.item_key(p.item_name) for _, p in parsed.rows})
        if items:
            check_deals.delay(item_keys=items)
        rejected = parsed.rejected
        report |= {
            "status": "partial" if rejected else "succeeded",
            "applied": len(parsed.rows),
            "rejected": rejected[:REPORTED_REJECTIONS],
            "summary": f"{len(parsed.rows)} row(s) applied, {len(rejected)} rejected"
            + "".join(f"; line {r['line']}: {r['reason']}" for r in rejected[:3]),
        }
    log.info("price import %s: %s", self.request.id, report["summary"])
    res.notifications.notify(
        requested_by, NotificationType.JOB, report, dedupe_key=f"job:{self.request.id}"
    )
