"""Price pages (issues 20.2 and 23.5): one price window everywhere, a chart you can read,
and reads bounded by stores x days however many times a price changed."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring

from notifier.migrations import summarise_price_days
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.shopping import charts
from notifier.shopping.deals import DealCheck
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply, apply_bulk
from tests.helpers import listen_to_app_mongo, login

PRICE_COLLECTIONS = ("prices", "price_history", "price_months")
STORES = ("Fresh Mart", "Value Foods", "Corner Market")


class PriceReads(monitoring.CommandListener):
    """Every read of a price collection the web process sends, with what it returned."""

    def __init__(self) -> None:
        self.active = False
        self.pending: dict[int, tuple[str, str, dict[str, Any]]] = {}
        self.reads: list[tuple[str, str, dict[str, Any], int]] = []
        self.cursors: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.active:
            return
        name = event.command_name
        collection = event.command.get(name) if name in ("find", "aggregate") else None
        if name == "getMore":
            collection = self.cursors.get(event.command["getMore"])
        if collection in PRICE_COLLECTIONS:
            self.pending[event.request_id] = (name, collection, dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        started = self.pending.pop(event.request_id, None)
        if started is None:
            return
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
        if cursor.get("id"):
            self.cursors[cursor["id"]] = started[1]
        self.reads.append((*started, len(batch)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.pending.pop(event.request_id, None)


@pytest.fixture
def reads(monkeypatch) -> PriceReads:
    """The app's MongoDB client reports its commands here (web/app.py builds it)."""
    return listen_to_app_mongo(monkeypatch, PriceReads())


@pytest.fixture
def app_config(config, reads, request):
    """The session's settings; a test may set PRICE_WINDOW_DAYS (indirect parametrize)."""
    window = getattr(request, "param", None)
    return dataclasses.replace(config, price_window_days=window) if window else config


def documents_read(db, reads: PriceReads) -> int:
    """What the server had to read: the documents a find returned, and every document an
    aggregation's first $match selects (it reads them all to group them)."""
    total = 0
    for name, collection, command, returned in reads.reads:
        if name == "aggregate":
            total += db[collection].count_documents(command["pipeline"][0].get("$match", {}))
        else:
            total += returned
    return total


def seed_changes(db, item: str, changes: int, days: int = 180) -> None:
    """`changes` prices of one item spread over `days` days at three stores."""
    start = datetime.now(UTC) - timedelta(days=days)
    writes = []
    for i in range(changes):
        at = start + timedelta(seconds=i * days * 86400 / changes)
        price = PriceInput(STORES[i % 3], item, 200 + (i * 37) % 150, 399)
        writes += record_price(price, at)[1]
    apply_bulk(db, writes)


@pytest.mark.gen_test(timeout=120)
async def test_price_pages_read_daily_lows_never_every_change(fetch, db, config, reads, alice):
    """2,000 changes of one item over 180 days: the item page, the watchlist fragment and
    the dashboard each read the current prices and a month of daily lows per store for
    each month of the window, never the changes themselves."""
    item = f"Coffee beans {uuid.uuid4().hex[:6]}"
    seed_changes(db, item, 2000)
    apply(db, [watch(alice.user_id, WatchInput(item))])
    _, browser = await login(fetch, alice.username, alice.password)
    # Current prices, and a month of daily lows per store for each month the window touches.
    bound = len(STORES) + len(STORES) * (config.price_window_days // 28 + 2)
    key = urllib.parse.quote(item.casefold())
    for path, headers in (
        (f"/items/{key}", browser),
        ("/fragments/watchlist", {**browser, "HX-Request": "true"}),
        ("/", browser),
    ):
        reads.reads.clear()
        reads.active = True
        response = await fetch(path, headers=headers)
        reads.active = False
        assert response.code == 200, path
        assert "$" in response.body.decode()
        read = documents_read(db, reads)
        assert 0 < read <= bound, (path, read, bound, [r[:2] for r in reads.reads])
        assert all(r[1] != "price_history" for r in reads.reads), path


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("app_config", [30], indirect=True)
async def test_one_price_window_for_the_low_the_sparkline_the_chart_and_the_headline(
    fetch, db, app_config, alice, sync_redis
):
    """PRICE_WINDOW_DAYS=30: a price 40 days old is in no figure, and all say 30 days."""
    item = f"Tea {uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    apply(db, [watch(alice.user_id, WatchInput(item))])
    for days, cents in ((40, 150), (20, 400), (0, 300)):
        apply(
            db,
            record_price(PriceInput("Value Foods", item, cents, 500), now - timedelta(days=days))[
                1
            ],
        )
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    DealCheck(db, service, window_days=app_config.price_window_days).run([item.casefold()])
    [note] = db.notifications.find({"user_id": alice.user_id})
    assert note["data"]["headline"] == f"{item} $3.00 at Value Foods, 40% off, lowest in 30 days"
    _, browser = await login(fetch, alice.username, alice.password)
    fragment = await fetch("/fragments/watchlist", headers={**browser, "HX-Request": "true"})
    body = fragment.body.decode()
    assert "30-day low $3.00" in body
    assert "Best price over 30 days: from $4.00 to $3.00, lowest $3.00" in body
    page = (await fetch(f"/items/{urllib.parse.quote(item)}", headers=browser)).body.decode()
    assert re.search(r"Lowest in 30 days</span>\s*<span class=\"fact-value\">\$3.00", page)
    assert "over the last 30 days" in page and "$1.50" not in page


@pytest.mark.gen_test(timeout=60)
async def test_the_item_page_charts_steps_with_axes_target_alerts_legend_and_a_table(
    fetch, db, alice, admin, sync_redis
):
    item = f"Oats {uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    apply(db, [watch(alice.user_id, WatchInput(item, 260))])
    apply(db, record_price(PriceInput("Fresh Mart", item, 320, 399), now - timedelta(days=30))[1])
    apply(db, record_price(PriceInput("Value Foods", item, 320, 399), now - timedelta(days=30))[1])
    apply(db, record_price(PriceInput("Fresh Mart", item, 250, 399), now)[1])
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    DealCheck(db, service).run([item.casefold()])  # $2.50 <= the $2.60 target: an alert
    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch(f"/items/{urllib.parse.quote(item)}", headers=browser)).body.decode()
    # Axes: five price labels (round steps) and five dates.
    y = re.search(r'<div class="y-axis".*?</div>', page, re.S).group(0)
    assert len(re.findall(r'<span class="tick">\$\d+\.\d\d</span>', y)) == 5
    x = re.search(r'<div class="x-axis".*?</div>', page, re.S).group(0)
    assert len(re.findall(r'<span class="tick">[A-Z][a-z]{2} \d{1,2}</span>', x)) == 5
    assert "Price</span>" in page and "Date (UTC)" in page
    # One step line per store, told apart by dash as well as colour; a tooltip per point.
    lines = re.findall(r'<path class="line" d="([^"]+)"[^>]*>', page)
    assert len(lines) == 2 and all(
        re.fullmatch(r"M[\d.]+ [\d.]+(H[\d.]+V[\d.]+)*H[\d.]+", d) for d in lines
    )
    assert 'stroke-dasharray="10 5"' in page
    assert "<title>Fresh Mart: $2.50 from " in page and "<title>Value Foods: $3.20 from " in page
    # The shopper's target and the price they were alerted at.
    assert re.search(r'<path class="target-line"[^>]*><title>Your target: \$2.60</title>', page)
    assert re.search(
        r'<path class="alert-point"[^>]*><title>You were alerted [A-Z][a-z]{2} \d{1,2}: \$2.50 at Fresh Mart</title>',
        page,
    )
    assert "Your target $2.60</li>" in page and "You were alerted</li>" in page
    # The table holds the same data.
    table = re.search(r'<details class="chart-table">.*?</details>', page, re.S).group(0)
    assert table.count("<tr><td>") == 3 and "$2.50" in table and "$3.20" in table


def test_scales_are_round_and_cover_what_is_drawn():
    assert charts.nice_scale(199, 899) == (0, 250)
    assert charts.nice_scale(650, 899) == (600, 100)
    bottom, step = charts.nice_scale(249, 249)  # one price: room around it
    assert bottom < 249 < bottom + 4 * step and step >= 10
    for low, high in ((1, 2), (99, 101), (1234, 98765), (0, 5)):
        bottom, step = charts.nice_scale(low, high)
        assert bottom <= low and bottom + 4 * step >= high


def test_a_sparkline_needs_two_prices_and_steps_between_them():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(10)]
    assert charts.sparkline([None] * 9 + [300], days, "Best price") is None
    assert charts.sparkline([300] * 10, days, "Best price") is None  # one price, held
    spark = charts.sparkline([None] * 5 + [300] * 3 + [250] * 2, days, "Best price")
    assert spark is not None and spark.path.count("V") == 1  # one step down
    assert spark.description == (
        "Best price over 10 days: from $3.00 to $2.50, lowest $2.50, highest $3.00"
    )


@pytest.mark.gen_test(timeout=60)
async def test_a_watch_with_one_price_says_so_instead_of_a_flat_line(fetch, db, alice):
    item = f"Rice {uuid.uuid4().hex[:6]}"
    apply(db, [watch(alice.user_id, WatchInput(item))])
    apply(db, record_price(PriceInput("Fresh Mart", item, 320, 399))[1])
    _, browser = await login(fetch, alice.username, alice.password)
    fragment = await fetch("/fragments/watchlist", headers={**browser, "HX-Request": "true"})
    row = re.search(rf'<li class="watch"[^>]*>.*?{item}.*?</li>', fragment.body.decode(), re.S)
    assert "One price so far" in row.group(0) and "<svg" not in row.group(0)
    assert "90-day low $3.20" in row.group(0)


def test_the_release_step_summarises_older_price_history_by_day(db):
    item = f"Flour {uuid.uuid4().hex[:6]}"
    key = item.casefold()
    day = datetime.now(UTC).replace(hour=12) - timedelta(days=3)
    for hours, cents in ((0, 300), (2, 250), (4, 280)):
        writes = record_price(
            PriceInput("Fresh Mart", item, cents, 399), day + timedelta(hours=hours)
        )[1]
        apply(db, [w for w in writes if w.collection != "price_months"])  # as before them
    assert db.price_months.count_documents({"item_key": key}) == 0
    summarise_price_days(db)
    summarise_price_days(db)  # again: nothing changes
    [month] = db.price_months.find({"item_key": key})
    assert month["lows"] == {f"{day.day:02d}": 250} and month["store_id"] == "fresh-mart"
    assert month["month"] == datetime(day.year, day.month, 1)
    assert month["bucket"] == f"{key}|{day.year:04d}-{day.month:02d}"
