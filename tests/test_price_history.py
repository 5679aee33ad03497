"""Price history, deal headlines and the history filters, against real MongoDB and Redis."""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notifier.notifications.store import NotificationWriter, format_id
from notifier.shopping.deals import deal_headline
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from tests.helpers import login


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:6]


def post(db, store, item, price, regular, now=None, price_id=None):
    apply(db, record_price(PriceInput(store, item, price, regular), now, price_id)[1])


def q(value: str) -> str:
    return urllib.parse.quote(value)


def test_every_price_set_is_recorded_once_and_kept_by_a_ttl_index(db, config, tag):
    item = f"Milk {tag}"
    post(db, "Value Foods", item, 300, 350)
    post(db, "Value Foods", item, 256, 350)
    # A retried write (an import task run again) carries the same price id: one entry.
    post(db, "Fresh Mart", item, 280, 350, price_id="a" * 24)
    post(db, "Fresh Mart", item, 280, 350, price_id="a" * 24)
    entries = list(db.price_history.find({"item_key": item.casefold()}).sort("at", 1))
    assert [
        (e["store_name"], e["price_in_cents"], e["regular_price_in_cents"]) for e in entries
    ] == [
        ("Value Foods", 300, 350),
        ("Value Foods", 256, 350),
        ("Fresh Mart", 280, 350),
    ]
    ttl = [i for i in db.price_history.index_information().values() if "expireAfterSeconds" in i]
    assert ttl == [
        {"v": 2, "key": [("at", 1)], "expireAfterSeconds": config.price_history_days * 86400}
    ]
    assert config.price_history_days == 180


def test_a_changed_retention_updates_the_ttl_index(db):
    from notifier.storage.schema import ensure_indexes

    try:
        ensure_indexes(db, history_days=30)
        [ttl] = [
            i for i in db.price_history.index_information().values() if "expireAfterSeconds" in i
        ]
        assert ttl["expireAfterSeconds"] == 30 * 86400
    finally:
        ensure_indexes(db)


def test_headlines_name_the_deal_with_correct_plurals():
    one = {"item_name": "Milk 1L", "best_price_in_cents": 256, "store_name": "Value Foods"}
    assert (
        deal_headline([{**one, "discount_percent": 27}]) == "Milk 1L $2.56 at Value Foods, 27% off"
    )
    assert (
        deal_headline([{**one, "discount_percent": 27, "lowest_in_days": 90}])
        == "Milk 1L $2.56 at Value Foods, 27% off, lowest in 90 days"
    )
    names = ["Milk 1L", "Bananas", "Coffee beans 500g"]
    several = [{**one, "item_name": n} for n in names]
    assert deal_headline(several) == "3 deals: Milk 1L, Bananas and Coffee beans 500g"
    assert deal_headline(several[:2]) == "2 deals: Milk 1L and Bananas"
    five = [*several, {**one, "item_name": "Bread"}, {**one, "item_name": "Eggs"}]
    assert deal_headline(five) == "5 deals: Milk 1L, Bananas, Coffee beans 500g and 2 more"
    five[1]["lowest_in_days"] = 90
    assert deal_headline(five).endswith("(Bananas lowest in 90 days)")


def test_the_deal_check_writes_headline_discount_and_lowest_in_90_days(db, check, alice, tag):
    milk, tea = f"Milk {tag}", f"Tea {tag}"
    for item in (milk, tea):
        apply(db, [watch(alice.user_id, WatchInput(item))])
    post(db, "Value Foods", milk, 300, 350, now=datetime.now(UTC) - timedelta(days=10))
    post(db, "Value Foods", milk, 256, 350)  # lower than anything in 90 days
    check.run([milk.casefold()])
    [note] = list(db.notifications.find({"user_id": alice.user_id}))
    data = note["data"]
    assert data["headline"] == f"{milk} $2.56 at Value Foods, 27% off, lowest in 90 days"
    assert data["message"] == "You have 1 new deal(s) on your watched items!"
    assert data["deals"] == [
        {
            "item_name": milk,
            "best_price_in_cents": 256,
            "regular_price_in_cents": 350,
            "store_name": "Value Foods",
            "store_id": "value-foods",
        }
    ]
    assert data["deal_details"] == [
        {"item_key": milk.casefold(), "discount_percent": 27, "lowest_in_days": 90}
    ]
    assert note["items"] == [milk.casefold()] and note["stores"] == ["value-foods"]
    assert "mil" in note["terms"] and tag in note["terms"]

    post(db, "Fresh Mart", tea, 400, 500)  # a first price: nothing to compare with
    check.run([tea.casefold()])
    newest = db.notifications.find_one({"user_id": alice.user_id}, sort=[("seq", -1)])
    assert newest["data"]["headline"] == f"{tea} $4.00 at Fresh Mart, 20% off"
    assert newest["data"]["deal_details"][0]["lowest_in_days"] is None


def seed_history(db, user_id: str, tag: str) -> dict[str, list[str]]:
    """Forty notifications of three kinds over four days; returns ids by kind, newest first."""
    writer = NotificationWriter(db)
    ids: dict[str, list[str]] = {"milk": [], "bread": [], "system": [], "job": []}
    start = datetime.now(UTC) - timedelta(days=4)
    for i in range(40):
        kind = ["milk", "bread", "system", "job"][i % 4]
        if kind in ("milk", "bread"):
            name = f"Milk 1L {tag}" if kind == "milk" else f"Rye bread {tag}"
            store = "value-foods" if kind == "milk" else "fresh-mart"
            deal = {
                "item_name": name,
                "best_price_in_cents": 100,
                "store_name": store,
                "store_id": store,
            }
            data = {"deals": [deal], "user_id": user_id, "message": "m", "headline": name}
            doc = writer.create(user_id, "deal-notification", data)
        elif kind == "system":
            doc = writer.create(user_id, "system-message", {"message": f"s{i}", "severity": "info"})
        else:
            doc = writer.create(
                user_id, "job-complete", {"job": "x", "status": "ok", "summary": ""}
            )
        db.notifications.update_one(
            {"_id": doc["_id"]}, {"$set": {"created_at": start + timedelta(hours=2 * i)}}
        )
        ids[kind].insert(0, doc["data"]["notification_id"])
    return ids


async def all_pages(fetch, user, query: str, limit: int = 3) -> list[str]:
    seen, before = [], ""
    for _ in range(50):
        response = await fetch(
            f"/api/notifications?limit={limit}&{query}{before}", headers=user.auth
        )
        assert response.code == 200, response.body
        page = json.loads(response.body)
        seen += [n["id"] for n in page["items"]]
        if page["next"] is None:
            return seen
        before = f"&before={page['next']}"
    raise AssertionError("paging did not end")


@pytest.mark.gen_test(timeout=60)
async def test_the_api_filters_page_through_every_match(fetch, db, alice, tag):
    ids = seed_history(db, alice.user_id, tag)
    deals = sorted(ids["milk"] + ids["bread"], reverse=True)
    assert await all_pages(fetch, alice, "type=deal-notification") == deals
    assert await all_pages(fetch, alice, "type=deals") == deals
    assert await all_pages(fetch, alice, "type=system-message") == ids["system"]
    assert await all_pages(fetch, alice, "type=job-complete", limit=20) == ids["job"]
    assert await all_pages(fetch, alice, f"item={q(f'milk 1l {tag}')}") == ids["milk"]
    assert await all_pages(fetch, alice, "store=fresh-mart") == ids["bread"]
    assert await all_pages(fetch, alice, "q=ry") == ids["bread"]  # a prefix of "rye"
    assert await all_pages(fetch, alice, f"q={q(f'MILK {tag}')}") == ids["milk"]
    assert await all_pages(fetch, alice, "q=milk&store=fresh-mart") == []
    # Dates: notification i was made at start + 2i hours.
    seqs = sorted((int(i) for k in ids.values() for i in k), reverse=True)
    first = datetime.now(UTC) - timedelta(days=4)
    since = (first + timedelta(hours=60)).isoformat().replace("+00:00", "Z")
    until = (first + timedelta(hours=70)).isoformat().replace("+00:00", "Z")
    window = await all_pages(fetch, alice, f"since={q(since)}&until={q(until)}")
    # Hours 62 to 70 (notifications 31 to 35); hour 60 is a hair before `since`.
    assert window == [format_id(min(seqs) + i) for i in range(35, 30, -1)]
    await fetch("/api/notifications/read", "POST", {"ids": ids["milk"][:3]}, headers=alice.auth)
    unread_milk = await all_pages(fetch, alice, f"unread=true&item={q(f'Milk 1L {tag}')}")
    assert unread_milk == ids["milk"][3:]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("type=coupons", "type must be one of"),
        ("unread=maybe", "unread must be"),
        ("since=yesterday", "since must be an ISO 8601 time"),
        ("until=2026-13-40", "until must be an ISO 8601 time"),
        ("since=2026-05-02&until=2026-05-01", "since must not be after until"),
        ("since=20260501", "since must be an ISO 8601 time"),
        ("item=" + "x" * 101, "item must be at most"),
        # Found by schemathesis: offsets that push a time past year 1 or 9999 in UTC.
        ("since=0001-01-01T00%3A00%3A00%2B23%3A59", "since is out of range"),
        ("until=9999-12-31T23%3A59%3A59-23%3A59", "until is out of range"),
        # Found by schemathesis: Tornado strips "\x1c" as a space, which left no filter.
        ("type=%1C", "type must be one of"),
        ("unread=%1C", "unread must be"),
    ],
)
async def test_bad_filters_are_a_400_never_a_500(fetch, alice, query, message):
    response = await fetch(f"/api/notifications?{query}", headers=alice.auth)
    assert response.code == 400
    assert message in json.loads(response.body)["error"]["message"]
    _, browser = await login(fetch, alice.username, alice.password)
    page = await fetch(f"/history?{query}", headers=browser)
    assert page.code == 400 and message in page.body.decode()
    assert 'id="history-filters"' in page.body.decode()  # the page, with its form


@pytest.mark.gen_test(timeout=60)
async def test_the_history_page_filters_without_javascript_and_for_htmx(fetch, db, alice, tag):
    ids = seed_history(db, alice.user_id, tag)
    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/history?type=deals&store=value-foods", headers=browser)).body.decode()
    shown = re.findall(r'<li id="notification-(\d{12})"', page)
    assert shown == ids["milk"]
    assert '<option value="deals" selected>' in page
    fragment = await fetch("/history?q=rye", headers={**browser, "HX-Request": "true"})
    body = fragment.body.decode()
    assert body.lstrip().startswith('<div id="history-results"')
    assert re.findall(r'<li id="notification-(\d{12})"', body) == ids["bread"][:20]
    assert "<html" not in body


@pytest.mark.gen_test(timeout=60)
async def test_watchlist_shows_best_price_low_and_a_sparkline_and_the_item_page_charts(
    fetch, db, alice, tag
):
    item = f"Coffee beans {tag}"
    await fetch("/api/watchlist", "POST", {"item_name": item}, headers=alice.auth)
    now = datetime.now(UTC)
    post(db, "Value Foods", item, 899, 899, now=now - timedelta(days=20))
    post(db, "Value Foods", item, 650, 899, now=now - timedelta(days=8))
    post(db, "Value Foods", item, 799, 899, now=now - timedelta(days=1))
    post(db, "Fresh Mart", item, 850, 899)
    _, browser = await login(fetch, alice.username, alice.password)
    fragment = (
        await fetch("/fragments/watchlist", headers={**browser, "HX-Request": "true"})
    ).body.decode()
    assert "$7.99" in fragment and "at Value Foods" in fragment
    assert "90-day low $6.50" in fragment
    svg = re.search(r'<svg class="chart sparkline".*?</svg>', fragment, re.S).group(0)
    assert 'role="img"' in svg and "<path" in svg
    assert "Best price over 90 days: from $8.99 to $7.99, lowest $6.50" in svg
    key = q(item.casefold())
    page = await fetch(f"/items/{key}", headers=browser)
    body = page.body.decode()
    assert page.code == 200 and body.count('<path class="line"') == 2  # one line per store
    assert "Price of " + item in body and "Fresh Mart $8.50 now" in body
    missing = await fetch("/items/no%20such%20thing", headers=browser)
    assert missing.code == 404


@pytest.mark.gen_test(timeout=60)
async def test_filtered_history_pages_keep_their_filter_both_ways(fetch, db, alice):
    writer = NotificationWriter(db)
    notes = []
    for i in range(45):
        notes.append(
            writer.create(alice.user_id, "system-message", {"message": f"n{i}", "severity": "info"})
        )
        writer.create(alice.user_id, "job-complete", {"job": "x", "status": "ok", "summary": ""})
    wanted = [n["data"]["notification_id"] for n in notes][::-1]
    _, browser = await login(fetch, alice.username, alice.password)

    def rows(page: str) -> list[str]:
        return re.findall(r'<li id="notification-(\d{12})"', page)

    first = (await fetch("/history?type=announcements", headers=browser)).body.decode()
    assert rows(first) == wanted[:20]
    older = re.search(r'href="/history(\?[^"]*before=\d+)"', first).group(1).replace("&amp;", "&")
    assert "type=system-message" in older
    second = (await fetch(f"/history{older}", headers=browser)).body.decode()
    assert rows(second) == wanted[20:40]
    newer = re.search(r'href="/history(\?[^"]*after=\d+)"', second).group(1).replace("&amp;", "&")
    assert rows((await fetch(f"/history{newer}", headers=browser)).body.decode()) == wanted[:20]
    older = re.search(r'href="/history(\?[^"]*before=\d+)"', second).group(1).replace("&amp;", "&")
    third = (await fetch(f"/history{older}", headers=browser)).body.decode()
    assert rows(third) == wanted[40:] and "Older" not in third


def test_the_release_step_gives_older_deal_notifications_their_search_keys(db, alice, tag):
    from notifier.migrations import add_search_fields

    deal = {"item_name": f"Oat milk {tag}", "best_price_in_cents": 1, "store_name": "S",
            "store_id": "s"}  # fmt: skip
    db.notifications.insert_one(
        {"user_id": alice.user_id, "seq": 1, "type": "deal-notification", "read": False,
         "created_at": datetime.now(UTC), "data": {"deals": [deal], "message": "m"}}
    )  # fmt: skip
    assert add_search_fields(db) >= 1
    doc = db.notifications.find_one({"user_id": alice.user_id})
    assert doc["items"] == [f"oat milk {tag}"] and doc["stores"] == ["s"] and "oa" in doc["terms"]
    assert add_search_fields(db) == 0  # once done, nothing to do
