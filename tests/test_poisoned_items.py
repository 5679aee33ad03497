"""Issue 23 #1: one item's bad data never stops a deal check for everyone else (real worker).

Item names are user text: none becomes a MongoDB field name (a NUL byte in one made every
check of a CSV import fail with InvalidDocument), and an item whose stored price cannot
make a notification fails alone, is counted, and stops being retried after MAX_FAILURES.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from celery import Celery
from tornado.httpclient import AsyncHTTPClient

from notifier.shopping.checks import MAX_FAILURES, DealCheckJobs
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from notifier.validation import item_key
from tests.helpers import login, wait_stored
from tests.test_metrics import parse, value

pytestmark = pytest.mark.usefixtures("worker")
FAILURES = "notifier_deal_check_item_failures_total"


def legacy_price(db, store: str, item: str, cents: int, regular: int) -> None:
    """A price stored as it was before names were checked (no validation on this path)."""
    apply(db, record_price(PriceInput(store, item, cents, regular))[1])


async def run_check(config, db, admin, keys: list[str]) -> dict:
    """What a CSV import (or beat) hands a worker: a check of these items; its job, when done."""
    job_id = str(uuid.uuid4())
    celery = Celery(broker=config.redis_url, set_as_current=False)
    try:
        celery.send_task(
            "tasks.deals.check_deals",
            kwargs={"item_keys": keys, "requested_by": admin.user_id},
            task_id=job_id,
        )
    finally:
        celery.close()

    def completed() -> bool:
        return bool(db.deal_check_jobs.find_one({"_id": job_id, "completed": True}))

    what = "the deal check completed"
    await asyncio.get_running_loop().run_in_executor(
        None, wait_stored, db.deal_check_jobs, completed, what, 60
    )
    job = db.deal_check_jobs.find_one({"_id": job_id})
    assert job is not None
    return job


def deals_of(db, user) -> set[str]:
    return {
        d["item_name"]
        for n in db.notifications.find({"user_id": user.user_id, "type": "deal-notification"})
        for d in n["data"]["deals"]
    }


@pytest.mark.gen_test(timeout=120)
async def test_a_nul_named_and_a_corrupt_item_fail_alone_and_everyone_else_hears(
    fetch, db, config, alice, bob, admin, worker_metrics_port
):
    tag = uuid.uuid4().hex[:8]
    good1, good2 = f"Oats {tag}", f"Rice {tag}"
    nul, corrupt = f"Bad\x00{tag}", f"Corrupt {tag}"
    for user, items in ((alice, (good1, nul)), (bob, (good2, corrupt))):
        apply(db, [watch(user.user_id, WatchInput(i)) for i in items])
    for item in (good1, good2, nul, corrupt):
        legacy_price(db, f"Store {tag}", item, 199, 299)
    db.prices.update_one({"item_key": item_key(corrupt)}, {"$set": {"price_in_cents": "cheap"}})
    keys = [item_key(i) for i in (good1, good2, nul, corrupt)]
    metrics_url = f"http://127.0.0.1:{worker_metrics_port}/metrics"
    before = parse((await AsyncHTTPClient().fetch(metrics_url)).body.decode())

    job = await run_check(config, db, admin, keys)

    # No item key became a field name: the job's changes are an array of entries.
    assert sorted(c["item_key"] for c in job["changes"]) == sorted(keys)
    assert [f["item_key"] for f in job["failed"]] == [item_key(corrupt)]
    assert "price_in_cents" in job["failed"][0]["error"]
    assert deals_of(db, alice) == {good1, nul}
    assert deals_of(db, bob) == {good2}  # the corrupt item failed; bob's other deal came
    after = parse((await AsyncHTTPClient().fetch(metrics_url)).body.decode())
    assert value(after, FAILURES) - value(before, FAILURES) >= 1
    marks = {m["_id"]: m for m in db.item_changes.find({"_id": {"$in": keys}})}
    assert set(marks) == {item_key(corrupt)}  # the good ones were released
    assert marks[item_key(corrupt)]["failures"] == 1

    # Failed again until MAX_FAILURES: then it is no longer claimed, and the admin sees it.
    db.item_changes.update_one({"_id": item_key(corrupt)}, {"$set": {"failures": MAX_FAILURES - 1}})
    await run_check(config, db, admin, [item_key(corrupt)])
    assert db.item_changes.find_one({"_id": item_key(corrupt)})["failures"] == MAX_FAILURES
    assert DealCheckJobs(db).claim([item_key(corrupt)]) == {}
    _, browser = await login(fetch, admin.username, admin.password)
    page = (await fetch("/admin", headers=browser)).body.decode()
    assert item_key(corrupt) in page and "no longer retried" in page
