"""Without SMTP_URL, emails are .eml files under var/outbox/, listed by a development page."""

from __future__ import annotations

import dataclasses
import email
import email.policy

import pytest

from notifier.email.service import EmailService
from notifier.notifications.store import NotificationWriter
from tests.helpers import login


@pytest.fixture
def app_config(config, tmp_path):
    return dataclasses.replace(config, smtp_url=None, var_dir=tmp_path)


@pytest.mark.gen_test
async def test_emails_land_in_the_outbox_and_the_dev_page_lists_them(
    fetch, app_config, db, sync_redis, alice
):
    doc = NotificationWriter(db).create(
        alice.user_id,
        "deal-notification",
        {
            "deals": [
                {
                    "item_name": "Chai <b>",
                    "best_price_in_cents": 250,
                    "regular_price_in_cents": 400,
                    "store_name": "Corner Market",
                    "store_id": "corner-market",
                }
            ],
            "user_id": alice.user_id,
            "message": "You have 1 new deal(s) on your watched items!",
        },
    )
    service = EmailService(app_config, db, sync_redis)
    email_id = service.plan_for_deal(doc)
    assert service.send(email_id, "task-o") == "sent"
    [path] = (app_config.var_dir / "outbox").glob("*.eml")
    raw = path.read_bytes()
    assert b"\r\nList-Unsubscribe: <http://localhost:" in raw  # a plain URL, not encoded
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == f"{alice.username}@example.test"
    assert "Chai &lt;b&gt;" in msg.get_body(("html",)).get_content()  # escaped in HTML
    assert "Chai <b>: $2.50" in msg.get_body(("plain",)).get_content()

    _, browser = await login(fetch, alice.username, alice.password)
    page = (await fetch("/dev/outbox", headers=browser)).body.decode()
    assert f"{alice.username}@example.test" in page and f"/dev/outbox/{path.name}" in page
    shown = await fetch(f"/dev/outbox/{path.name}", headers=browser)
    assert shown.code == 200 and b"List-Unsubscribe-Post" in shown.body
    assert (await fetch("/dev/outbox/..%2Fjwt-secret", headers=browser)).code == 404
