"""Pages and fragments over plain HTTP: history pagination, no-JS forms, watchlist, admin."""

from __future__ import annotations

import json
import re

import pytest

from notifier.notifications.store import NotificationWriter, format_id
from tests.helpers import form, login, watchlist


def row_ids(page: str) -> list[str]:
    return re.findall(r'<li id="notification-(\d{12})"', page)


@pytest.mark.gen_test
async def test_history_pages_newest_first_twenty_at_a_time(fetch, db, alice):
    writer = NotificationWriter(db)
    for i in range(45):
        writer.create(alice.user_id, "system-message", {"message": f"note {i}", "severity": "info"})
    _, browser = await login(fetch, alice.username, alice.password)

    first = (await fetch("/history", headers=browser)).body.decode()
    ids = row_ids(first)
    assert len(ids) == 20 and ids == sorted(ids, reverse=True)
    assert 'id="notification-list"' in first and "Newer" not in first
    older = re.search(r'href="/history\?before=(\d+)"', first).group(1)
    assert older == ids[-1]

    second = (await fetch(f"/history?before={older}", headers=browser)).body.decode()
    ids2 = row_ids(second)
    assert len(ids2) == 20 and max(ids2) < min(ids)
    back = re.search(r'href="/history\?after=(\d+)"', second).group(1)
    assert (await fetch(f"/history?after={back}", headers=browser)).body.decode().count(
        "<li id="
    ) == 20
    assert row_ids((await fetch(f"/history?after={back}", headers=browser)).body.decode()) == ids

    third = (await fetch(f"/history?before={ids2[-1]}", headers=browser)).body.decode()
    assert len(row_ids(third)) == 5 and "Older" not in third

    bad = await fetch("/history?before=nonsense", headers=browser)
    assert bad.code == 400 and "notification id" in bad.body.decode()


@pytest.mark.gen_test
async def test_mark_read_without_javascript(fetch, db, alice):
    writer = NotificationWriter(db)
    notes = [
        writer.create(alice.user_id, "system-message", {"message": f"n{i}", "severity": "info"})
        for i in range(3)
    ]
    _, browser = await login(fetch, alice.username, alice.password)
    one = notes[0]["data"]["notification_id"]
    body = form(_xsrf=browser["X-XSRFToken"], ids=[one], back="/history")
    response = await fetch("/history/read", "POST", body, headers={"Cookie": browser["Cookie"]})
    assert response.code == 303 and response.headers["Location"] == "/history"
    listed = json.loads((await fetch("/api/notifications?unread=1", headers=alice.auth)).body)
    assert listed["unread_count"] == 2 and one not in [n["id"] for n in listed["items"]]

    body = form(_xsrf=browser["X-XSRFToken"], all="1")
    await fetch("/history/read", "POST", body, headers={"Cookie": browser["Cookie"]})
    listed = json.loads((await fetch("/api/notifications", headers=alice.auth)).body)
    assert listed["unread_count"] == 0 and all(n["read"] for n in listed["items"])


@pytest.mark.gen_test
async def test_watchlist_fragment_adds_shows_errors_and_removes(fetch, alice, item):
    _, browser = await login(fetch, alice.username, alice.password)
    htmx = {**browser, "HX-Request": "true"}
    added = await fetch(
        "/fragments/watchlist", "POST", form(item_name=item, target_price="2.50"), headers=htmx
    )
    assert added.code == 200 and item in added.body.decode() and "$2.50" in added.body.decode()
    bad = await fetch(
        "/fragments/watchlist", "POST", form(item_name=item, target_price="cheap"), headers=htmx
    )
    assert bad.code == 400 and "Target must be an amount" in bad.body.decode()
    watched = [
        {
            "item_name": item,
            "target_price_in_cents": 250,
            "min_discount_percent": None,
            "realert_hours": None,
        }
    ]
    assert await watchlist(fetch, alice) == watched
    removed = await fetch(
        f"/fragments/watchlist/{item.replace(' ', '%20')}", "DELETE", headers=htmx
    )
    page = removed.body.decode()
    assert removed.code == 200 and '<li class="watch"' not in page
    assert await watchlist(fetch, alice) == []
    # Undo puts it back as it was, target and all; a second undo has nothing left to do.
    assert f"Stopped watching {item}." in page
    undo = re.search(r'name="undo" value="([0-9a-f]{24})"', page).group(1)
    restored = await fetch("/fragments/watchlist-undo", "POST", form(undo=undo), headers=htmx)
    assert restored.code == 200 and f"Watching {item}." in restored.body.decode()
    assert await watchlist(fetch, alice) == watched
    again = await fetch("/fragments/watchlist-undo", "POST", form(undo=undo), headers=htmx)
    assert again.code == 404 and "nothing to undo" in again.body.decode()


@pytest.mark.gen_test
async def test_watchlist_api_round_trip(fetch, alice, item):
    r = await fetch(
        "/api/watchlist",
        "POST",
        {"item_name": item, "target_price_in_cents": 199},
        headers=alice.auth,
    )
    assert r.code == 201
    again = await fetch(
        "/api/watchlist", "POST", {"item_name": f"  {item.upper()} "}, headers=alice.auth
    )
    assert again.code == 201  # same item (case and spaces differ): updated, not duplicated
    items = await watchlist(fetch, alice)
    assert len(items) == 1 and items[0]["target_price_in_cents"] is None
    gone = await fetch(f"/api/watchlist/{item.replace(' ', '%20')}", "DELETE", headers=alice.auth)
    assert gone.code == 204
    again = await fetch(f"/api/watchlist/{item.replace(' ', '%20')}", "DELETE", headers=alice.auth)
    assert again.code == 404


@pytest.mark.gen_test
async def test_admin_page_and_stats_are_for_admins_only(fetch, ws_connect, alice, admin):
    _, shopper = await login(fetch, alice.username, alice.password)
    assert (await fetch("/admin", headers=shopper)).code == 403
    _, boss = await login(fetch, admin.username, admin.password)
    page = await fetch("/admin", headers=boss)
    assert page.code == 200 and "Post a price" in page.body.decode()
    await ws_connect(f"?format=json&token={alice.token}")
    stats = json.loads((await fetch("/api/stats", headers=admin.auth)).body)
    assert stats["connections"] >= 1 and stats["users"] >= 1
    assert stats["processes"][0]["process"] == "test:1"


@pytest.mark.gen_test
async def test_admin_price_form_posts_and_reports_errors(fetch, db, admin, item):
    _, boss = await login(fetch, admin.username, admin.password)
    htmx = {**boss, "HX-Request": "true"}
    ok = await fetch(
        "/fragments/admin/prices",
        "POST",
        form(
            store_name="Corner Market",
            item_name=item,
            price="1.25",
            regular_price="2",
            valid_until="",
        ),
        headers=htmx,
    )
    assert ok.code == 200 and "Posted" in ok.body.decode()
    stored = db.prices.find_one({"item_name": item})
    assert (stored["price_in_cents"], stored["regular_price_in_cents"]) == (125, 200)
    bad = await fetch(
        "/fragments/admin/prices",
        "POST",
        form(store_name="Corner Market", item_name=item, price="3", regular_price="2"),
        headers=htmx,
    )
    assert bad.code == 400 and "must not exceed" in bad.body.decode()


@pytest.mark.gen_test
async def test_healthz_reports_both_stores(fetch):
    response = await fetch("/healthz")
    assert response.code == 200
    assert json.loads(response.body) == {"status": "ok", "mongo": "ok", "redis": "ok"}


@pytest.mark.gen_test
async def test_static_assets_are_served_locally(fetch):
    for path in (
        "/static/vendor/htmx.min.js",
        "/static/vendor/htmx-ext-ws.js",
        "/static/app.js",
        "/static/app.css",
    ):
        assert (await fetch(path)).code == 200
    page = (await fetch("/login")).body.decode()
    assert "http://" not in page.replace('xmlns="http://', "") and "https://" not in page


@pytest.mark.gen_test
async def test_pages_are_right_when_the_seq_counter_lags(fetch, db, alice):
    """Pages are seq ranges found from the user's state document, whose seq is only ever
    behind (a writer died before advancing it). (A missing state document means no
    notifications yet: migration 2 gave every earlier user one.)"""
    writer = NotificationWriter(db)
    for i in range(45):
        writer.create(alice.user_id, "system-message", {"message": f"n{i}", "severity": "info"})
    db.user_state.update_one({"_id": alice.user_id}, {"$set": {"seq": 41}})
    seen, before = [], ""
    while True:
        response = await fetch(f"/api/notifications?limit=20{before}", headers=alice.auth)
        page = json.loads(response.body)
        seen += [n["id"] for n in page["items"]]
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert seen == [format_id(seq) for seq in range(45, 0, -1)]
    assert page["unread_count"] == 45
    beyond = await fetch(
        f"/api/notifications?limit=5&before={format_id(10**6)}", headers=alice.auth
    )
    assert [n["id"] for n in json.loads(beyond.body)["items"]] == [
        format_id(s) for s in range(45, 40, -1)
    ]
