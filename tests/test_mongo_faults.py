"""MongoDB write errors injected with SecantusDB's configureFailPoint: retried, not lost,
not duplicated."""

from __future__ import annotations

import pytest

from tests.helpers import watch

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.gen_test(timeout=60)
async def test_failed_notification_writes_are_retried_once_through(
    fetch, ws_connect, db, alice, admin, item
):
    await watch(fetch, alice, item)
    sock = await ws_connect(f"?format=json&token={alice.token}")
    admin_db = db.client.admin
    # The next two inserts fail (WriteConflict): the deal check's notification insert,
    # twice. The task retries with backoff and the third attempt stores it.
    admin_db.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "errorCode": 112},
        }
    )
    try:
        body = {
            "store_name": "Fresh Mart",
            "item_name": item,
            "price_in_cents": 150,
            "regular_price_in_cents": 300,
        }
        assert (await fetch("/api/prices", "POST", body, headers=admin.auth)).code == 201
        note = await sock.recv_type("deal-notification", timeout=30)
        assert note["data"]["deals"][0]["item_name"] == item
    finally:
        admin_db.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert db.notifications.count_documents({"user_id": alice.user_id}) == 1
    # Nothing more comes: the next thing on the socket is this announcement.
    await fetch(
        "/api/announcements", "POST", {"message": "after", "severity": "info"}, headers=admin.auth
    )
    assert (await sock.recv_type("system-message"))["data"]["message"] == "after"
