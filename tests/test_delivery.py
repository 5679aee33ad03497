"""The whole path with a real worker: price posted -> deal check -> MongoDB -> Redis -> socket."""

from __future__ import annotations

import html
import json
import re
import time

import pytest

from tests.helpers import announce, login, post_price, watch

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.gen_test(timeout=60)
async def test_a_posted_price_reaches_the_shopper_live_in_both_formats_and_the_history(
    fetch, ws_connect, alice, admin, item
):
    await watch(fetch, alice, item)
    as_json = await ws_connect(f"?format=json&token={alice.token}")
    as_html = await ws_connect(f"?format=html&token={alice.token}")
    await as_html.recv()  # the greeting fragment

    started = time.perf_counter()
    await post_price(fetch, admin, item, price=249, regular=399, store="Green Grocer")
    envelope = await as_json.recv_type("deal-notification", timeout=20)
    elapsed = time.perf_counter() - started
    print(f"\nposted price -> deal-notification on the socket: {elapsed * 1000:.0f} ms")

    data = envelope["data"]
    assert data["message"] == "You have 1 new deal(s) on your watched items!"
    assert data["deals"] == [
        {
            "item_name": item,
            "best_price_in_cents": 249,
            "regular_price_in_cents": 399,
            "store_name": "Green Grocer",
            "store_id": "green-grocer",
        }
    ]
    assert data["user_id"] == alice.user_id and data["unread_count"] == 1
    assert data["notification_id"] == data["id"]

    fragment = await as_html.recv(timeout=20)
    assert f'id="notification-{data["id"]}"' in fragment
    assert 'hx-swap-oob="afterbegin:#notification-list"' in fragment
    assert 'hx-swap-oob="beforeend:#toasts"' in fragment
    assert re.search(r'id="unread-badge"[^>]*hx-swap-oob="true"[^>]*>1<', fragment)
    assert html.escape(item) in fragment and "$2.49" in fragment and "Green Grocer" in fragment
    carried = re.search(r"data-event=\"notification:deal\" data-detail='([^']*)'", fragment)
    assert carried and json.loads(html.unescape(carried.group(1)))["deals"][0]["item_name"] == item

    listed = json.loads((await fetch("/api/notifications", headers=alice.auth)).body)
    assert listed["unread_count"] == 1 and listed["next"] is None
    [n] = listed["items"]
    assert (n["id"], n["type"], n["read"]) == (data["id"], "deal-notification", False)
    assert n["data"]["deals"][0]["item_name"] == item

    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/history", headers=browser)).body.decode()
    assert f'id="notification-{data["id"]}"' in page and "$2.49" in page


@pytest.mark.gen_test(timeout=60)
async def test_bob_never_receives_alices_notifications(fetch, ws_connect, alice, bob, admin, item):
    await watch(fetch, alice, item)
    await watch(fetch, bob, item + " (bob)")
    alice_ws = await ws_connect(f"?format=json&token={alice.token}")
    bob_ws = await ws_connect(f"?format=json&token={bob.token}")
    await post_price(fetch, admin, item)
    assert (await alice_ws.recv_type("deal-notification", 20))["data"]["user_id"] == alice.user_id
    # Bob's own deal is published after alice's on the same channel, so had alice's been
    # routed to bob, it would arrive first.
    await post_price(fetch, admin, item + " (bob)")
    bobs = await bob_ws.recv_type("deal-notification", 20)
    assert bobs["data"]["user_id"] == bob.user_id
    assert [d["item_name"] for d in bobs["data"]["deals"]] == [item + " (bob)"]
    listed = json.loads((await fetch("/api/notifications", headers=bob.auth)).body)
    assert [n["data"]["user_id"] for n in listed["items"]] == [bob.user_id]


@pytest.mark.gen_test(timeout=60)
async def test_item_names_are_escaped_text(fetch, ws_connect, alice, admin, item):
    evil = f"<img src=x onerror=alert(1)> {item}"
    await watch(fetch, alice, evil)
    sock = await ws_connect(f"?format=html&token={alice.token}")
    await sock.recv()
    await post_price(fetch, admin, evil)
    fragment = await sock.recv(timeout=20)
    assert "<img" not in fragment
    assert "&lt;img src=x onerror=alert(1)&gt;" in fragment
    _, browser = await login(fetch, alice.username, alice.password)
    for path in ("/", "/history"):
        page = (await fetch(path, headers=browser)).body.decode()
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.gen_test(timeout=90)
async def test_a_requested_check_reports_job_complete_and_is_idempotent(
    fetch, ws_connect, alice, admin, item, db
):
    await watch(fetch, alice, item)
    alice_ws = await ws_connect(f"?format=json&token={alice.token}")
    admin_ws = await ws_connect(f"?format=json&token={admin.token}")
    # Stored directly, so only the requested check can find this deal.
    from notifier.shopping.prices import PriceInput, record_price
    from notifier.storage.writes import apply

    apply(db, record_price(PriceInput("Value Foods", item, 100, 200))[1])

    for run in (1, 2):
        response = await fetch("/api/deal-checks", "POST", headers=admin.auth)
        assert response.code == 202
        job_id = json.loads(response.body)["job_id"]
        done = await admin_ws.recv_type("job-complete", timeout=30, skip=("job-progress",))
        assert done["data"]["job_id"] == job_id and done["data"]["status"] == "succeeded"
        assert done["data"]["job"] == "deal-check"
        if run == 1:
            deal = await alice_ws.recv_type("deal-notification", 10)
            assert deal["data"]["deals"][0]["item_name"] == item
    assert db.notifications.count_documents({"user_id": alice.user_id}) == 1
    # The second run sent alice nothing: the next thing she gets is this announcement.
    await fetch(
        "/api/announcements",
        "POST",
        {"message": "sentinel", "severity": "info"},
        headers=admin.auth,
    )
    assert (await alice_ws.recv_type("system-message"))["data"]["message"] == "sentinel"


@pytest.mark.gen_test(timeout=60)
async def test_every_socket_of_the_user_gets_it_even_when_one_has_died(
    fetch, ws_connect, alice, admin, item
):
    await watch(fetch, alice, item)
    tabs = [await ws_connect(f"?format=json&token={alice.token}") for _ in range(3)]
    tabs[0].conn.protocol.stream.close()  # a tab whose connection dropped without a close frame
    await post_price(fetch, admin, item)
    for tab in tabs[1:]:
        assert (await tab.recv_type("deal-notification", 20))["data"]["deals"][0][
            "item_name"
        ] == item


@pytest.mark.gen_test
async def test_announcements_reach_everyone_connected(fetch, ws_connect, alice, bob, admin):
    sockets = [await ws_connect(f"?format=json&token={u.token}") for u in (alice, bob)]
    html_sock = await ws_connect(f"?format=html&token={bob.token}")
    await html_sock.recv()
    await announce(fetch, admin, "Store hours <changed>", "warning")
    for sock in sockets:
        msg = await sock.recv_type("system-message")
        assert msg["data"]["message"] == "Store hours <changed>"
        assert msg["data"]["severity"] == "warning"
    fragment = await html_sock.recv()
    assert (
        "Store hours &lt;changed&gt;" in fragment and 'data-event="notification:system"' in fragment
    )


@pytest.mark.gen_test(timeout=60)
async def test_marking_read_updates_every_tab(fetch, ws_connect, alice, admin, item):
    await watch(fetch, alice, item)
    tab1 = await ws_connect(f"?format=json&token={alice.token}")
    tab2 = await ws_connect(f"?format=json&token={alice.token}")
    await post_price(fetch, admin, item)
    note = await tab1.recv_type("deal-notification", 20)
    await tab2.recv_type("deal-notification", 20)
    response = await fetch(
        "/api/notifications/read", "POST", {"ids": [note["data"]["id"]]}, headers=alice.auth
    )
    assert json.loads(response.body) == {"unread_count": 0}
    for tab in (tab1, tab2):
        read = await tab.recv_type("notification-read")
        assert read["data"] == {"ids": [note["data"]["id"]], "unread_count": 0}
