"""Issue 23 #6, against the test web server: malformed unsubscribe tokens, the watchlist cap
under concurrency, and ids that are exactly twelve digits (no trailing newline)."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import quote

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.shopping.watchlist import MAX_ITEMS, WatchInput, watch
from notifier.storage.writes import apply
from tests.helpers import login


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "token", ["a.%C3%A9", "%C3%A9.a", "a.%ED%A0%80", "%00.%00", ".", "a.", "é", "a.b.c"]
)
async def test_a_malformed_unsubscribe_token_is_a_400_page(fetch, token):
    for method in ("GET", "POST"):
        body = None if method == "GET" else f"token={token}"
        path = f"/unsubscribe?token={token}" if method == "GET" else "/unsubscribe"
        answer = await fetch(path, method, body)
        assert answer.code == 400, (method, token, answer.code)


@pytest.fixture
def shoppers(make_user, db):
    """Users whose 200 watches each are removed after the test (later tests read whole
    collections: test_bad_input's snapshot)."""
    made = []

    def make():
        made.append(user := make_user())
        return user

    yield make
    ids = [u.user_id for u in made]
    db.watchlists.delete_many({"user_id": {"$in": ids}})
    db.watch_counts.delete_many({"_id": {"$in": ids}})


@pytest.mark.gen_test(timeout=180)
async def test_forty_concurrent_adds_at_199_store_exactly_200(base_url, fetch, db, shoppers):
    """Three shoppers at 199 of 200 each send forty adds at once, in five rounds (the old
    check-then-write let 201-203 in about every other round)."""
    tag = uuid.uuid4().hex[:6]
    client = AsyncHTTPClient(force_instance=True, max_clients=120)
    try:
        for _ in range(5):
            users = [shoppers() for _ in range(3)]
            for user in users:
                apply(db, [watch(user.user_id, WatchInput(f"Item {tag} {i}")) for i in range(199)])
            requests = [
                HTTPRequest(
                    f"{base_url}/api/watchlist",
                    "POST",
                    headers=user.auth,
                    body=json.dumps({"item_name": f"New {tag} {i}"}),
                )
                for i in range(40)
                for user in users
            ]
            answers = await asyncio.gather(*(client.fetch(r, raise_error=False) for r in requests))
            stored = [db.watchlists.count_documents({"user_id": u.user_id}) for u in users]
            assert stored == [MAX_ITEMS] * 3
            codes = [a.code for a in answers]
            assert codes.count(201) == len(users), sorted(codes)
            refused = {json.loads(a.body)["error"]["code"] for a in answers if a.code != 201}
            assert refused == {"watchlist_full"}
    finally:
        client.close()

    # Removing one frees its place, once; watching a watched item again takes none.
    alice = users[0]
    gone = await fetch(f"/api/watchlist/{quote(f'Item {tag} 0')}", "DELETE", headers=alice.auth)
    assert gone.code == 204, gone.body
    again = [
        await fetch("/api/watchlist", "POST", {"item_name": name}, headers=alice.auth)
        for name in (f"Item {tag} 1", f"Again {tag} 1", f"Again {tag} 2")
    ]
    assert [a.code for a in again] == [201, 201, 400]
    assert db.watchlists.count_documents({"user_id": alice.user_id}) == MAX_ITEMS


@pytest.mark.gen_test
@pytest.mark.parametrize("query", ["before=000000000005%0A", "before=000000000005%0D%0A"])
async def test_an_id_with_a_trailing_newline_is_refused(fetch, alice, query):
    answer = await fetch(f"/api/notifications?{query}", headers=alice.auth)
    assert answer.code == 400, answer.body
    assert json.loads(answer.body)["error"]["code"] == "invalid_input"
    _, browser = await login(fetch, alice.username, alice.password)
    for page in (f"/history?{query}", "/history?after=000000000001%0A"):
        assert (await fetch(page, headers=browser)).code == 400, page


@pytest.mark.gen_test
async def test_an_ack_with_a_trailing_newline_gets_an_error_and_stores_nothing(
    ws_connect, db, sync_redis, alice
):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    service.notify(alice.user_id, "system-message", {"message": "hi", "severity": "info"})
    await sock.recv_type("system-message")
    sock.send_json({"type": "ack", "last_id": "000000000001\n"})
    sock.send_json({"type": "ping"})
    answer = await sock.recv_json()
    assert answer["type"] == "error", answer
    assert (await sock.recv_json())["type"] == "pong"
    assert not db.user_state.find_one({"_id": alice.user_id}).get("acked_seq")
