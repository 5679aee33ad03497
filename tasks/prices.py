"""Price imports: a CSV applied by a worker, reported to the uploader as job-complete."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pymongo.errors import PyMongoError
from redis import RedisError

from notifier import validation
from notifier.errors import InputError
from notifier.shopping.prices import parse_price_csv, record_price
from notifier.storage.writes import apply
from tasks import celery
from tasks.deals import check_deals

log = logging.getLogger(__name__)
REPORTED_REJECTIONS = 50


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
        for _, price in parsed.rows:
            apply(res.db, record_price(price)[1])
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
        requested_by, "job-complete", report, dedupe_key=f"job:{self.request.id}"
    )
