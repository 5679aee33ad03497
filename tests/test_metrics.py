"""GET /metrics on a web process, and the Celery worker's metrics port, scraped for real."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from notifier.metrics import REGISTRY
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.fanout import METRICS_EVERY
from notifier.realtime.publishing import NotificationService
from tests.helpers import collect, post_price, watch

METRICS_TOKEN = "scrape-" + "s" * 30


@pytest.fixture
def app_config(config, request):
    """The session settings, with per-test overrides passed as the fixture's param."""
    return dataclasses.replace(config, **getattr(request, "param", {}))


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("notifier_"), family.name
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.gen_test
async def test_metrics_count_sockets_deliveries_and_latency(
    fetch, ws_connect, alice, db, sync_redis
):
    before = parse((await fetch("/metrics")).body.decode())
    tabs = [await ws_connect(f"?format=json&token={alice.token}") for _ in range(2)]
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    service.notify(alice.user_id, "system-message", {"message": "hi", "severity": "info"})
    for tab in tabs:
        await collect(tab, 1)

    response = await fetch("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    after = parse(response.body.decode())
    assert value(after, "notifier_open_connections") == 2
    assert value(after, "notifier_users_online") == 1
    delivered = "notifier_messages_delivered_total"
    assert (
        value(after, delivered, type="system-message")
        - value(before, delivered, type="system-message")
        == 2
    )  # one fan-out, two sockets
    latency = "notifier_delivery_latency_seconds_count"
    assert value(after, latency) - value(before, latency) == 1
    assert value(after, "notifier_delivery_latency_seconds_bucket", le="+Inf") >= 1
    for name in (
        "notifier_pubsub_reconnects_total",
        "notifier_gap_fills_total",
        "notifier_process_resident_memory_bytes",
    ):
        assert (name, ()) in after, name


@pytest.mark.gen_test
async def test_deliveries_are_written_to_the_metrics_without_a_scrape(
    ws_connect, alice, db, sync_redis
):
    """Deliveries are counted in memory and written once per METRICS_EVERY window."""
    name, labels = "notifier_messages_delivered_total", {"type": "system-message"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    observed = REGISTRY.get_sample_value("notifier_delivery_latency_seconds_count") or 0.0
    tab = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    for i in range(3):
        service.notify(alice.user_id, "system-message", {"message": f"#{i}", "severity": "info"})
    await collect(tab, 3)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10 * METRICS_EVERY
    while (REGISTRY.get_sample_value(name, labels) or 0.0) < before + 3:
        assert loop.time() < deadline, "the window's deliveries were never written"
        await asyncio.sleep(METRICS_EVERY / 5)
    assert REGISTRY.get_sample_value(name, labels) == before + 3
    # One latency per window with notifications: the three came in one or two windows.
    count = REGISTRY.get_sample_value("notifier_delivery_latency_seconds_count")
    assert count is not None and 1 <= count - observed <= 2


@pytest.mark.gen_test
@pytest.mark.parametrize("app_config", [{"metrics_token": METRICS_TOKEN}], indirect=True)
async def test_metrics_need_the_metrics_token_when_one_is_set(app_config, fetch, admin):
    assert (await fetch("/metrics")).code == 401
    assert (await fetch("/metrics", headers={"Authorization": "Bearer wrong"})).code == 401
    assert (await fetch("/metrics", headers=admin.auth)).code == 401  # an admin JWT is not it
    ok = await fetch("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.code == 200 and b"notifier_open_connections" in ok.body


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "app_config", [{"env": "production", "metrics_token": None}], indirect=True
)
async def test_metrics_are_not_served_in_production_without_a_token(app_config, fetch):
    response = await fetch("/metrics")
    assert response.code == 404
    assert b"METRICS_TOKEN" in response.body


@pytest.mark.gen_test(timeout=60)
async def test_the_worker_serves_task_and_deal_check_metrics(
    fetch, ws_connect, worker, worker_metrics_port, admin, alice, item
):
    http = AsyncHTTPClient()
    url = f"http://127.0.0.1:{worker_metrics_port}/metrics"

    async def scrape():
        return parse((await http.fetch(url)).body.decode())

    before = await scrape()
    await watch(fetch, alice, item)
    check_runs = "notifier_celery_tasks_total"
    # The check is planned by check_deals and run in chunks by check_deal_chunk.
    labels = {"task": "tasks.deals.check_deal_chunk", "outcome": "succeeded"}
    sock = await ws_connect(f"?format=json&token={alice.token}")
    await post_price(fetch, admin, item)  # queues a deal check for the item
    await sock.recv_type("deal-notification", timeout=30)  # the check has run
    # The chunk's task counters move as it returns, just after it published: read them
    # again until they have (a scrape is the only way to see them).
    deadline = time.monotonic() + 10
    while value(after := await scrape(), check_runs, **labels) <= value(
        before, check_runs, **labels
    ):
        assert time.monotonic() < deadline, "the worker never counted the deal check"
    duration = "notifier_deal_check_duration_seconds_count"
    assert value(after, duration) > value(before, duration)
    assert (
        value(after, "notifier_deals_found_total")
        >= value(before, "notifier_deals_found_total") + 1
    )
    task_time = "notifier_celery_task_duration_seconds_count"
    assert value(after, task_time, task="tasks.deals.check_deal_chunk") > value(
        before, task_time, task="tasks.deals.check_deal_chunk"
    )
    assert ("notifier_emails_sent_total", ()) in after
    assert ("notifier_emails_failed_total", ()) in after
