"""Issue 23 #1 and #7: one rule for item, store and user names at every entry (API, form,
CSV import, CLI), and no control character in an email Subject whatever is stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import unicodedata
import uuid

import pytest

from notifier.email.service import EmailService
from notifier.notifications.store import NotificationWriter
from tests.helpers import form, login

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
# NUL, BEL, ESC, DEL, a C1 control (NEL), a form feed, the right-to-left override, an isolate.
BAD = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x0c", "\u202e", "\u2066"]


def price(item: str, store: str = "Fresh Mart") -> dict:
    return {
        "store_name": store,
        "item_name": item,
        "price_in_cents": 199,
        "regular_price_in_cents": 299,
    }


@pytest.mark.gen_test
@pytest.mark.parametrize("bad", BAD, ids=[f"U+{ord(c):04X}" for c in BAD])
async def test_the_api_refuses_a_name_with_a_control_or_bidi_character(
    fetch, db, alice, admin, bad
):
    tag = uuid.uuid4().hex[:8]
    name = f"Milk{bad}{tag}"
    answers = [
        (
            await fetch("/api/watchlist", "POST", {"item_name": name}, headers=alice.auth),
            "item_name",
        ),
        (await fetch("/api/prices", "POST", price(name), headers=admin.auth), "item_name"),
        (await fetch("/api/prices", "POST", price(tag, name), headers=admin.auth), "store_name"),
    ]
    for answer, field in answers:
        assert answer.code == 400, answer.body
        error = json.loads(answer.body)["error"]
        assert error["code"] == "invalid_input" and field in error["message"]
        assert f"U+{ord(bad):04X}" in error["message"]
    assert db.watchlists.count_documents({"user_id": alice.user_id}) == 0
    assert db.prices.count_documents({"item_name": {"$regex": tag}}) == 0
    assert db.stores.count_documents({"name": {"$regex": tag}}) == 0


@pytest.mark.gen_test
async def test_names_are_stored_nfc_normalised_and_trimmed(fetch, db, alice):
    tag = uuid.uuid4().hex[:8]
    decomposed = f"  Cafe\u0301 \t au\u0308 lait {tag}\n"
    answer = await fetch("/api/watchlist", "POST", {"item_name": decomposed}, headers=alice.auth)
    assert answer.code == 201, answer.body
    [stored] = db.watchlists.find({"user_id": alice.user_id})
    assert stored["item_name"] == f"Caf\u00e9 a\u00fc lait {tag}"
    assert unicodedata.is_normalized("NFC", stored["item_name"])
    # The composed spelling is the same item.
    again = await fetch(
        "/api/watchlist", "POST", {"item_name": f"Café aü lait {tag}"}, headers=alice.auth
    )
    assert again.code == 201
    assert db.watchlists.count_documents({"user_id": alice.user_id}) == 1


@pytest.mark.gen_test
async def test_the_forms_say_what_is_wrong_and_store_nothing(fetch, db, alice, admin):
    """Tornado turns a form's control characters into spaces silently; a name is refused
    with a message on the page instead."""
    tag = uuid.uuid4().hex[:8]
    _, shopper = await login(fetch, alice.username, alice.password)
    answer = await fetch(
        "/fragments/watchlist",
        "POST",
        form(item_name=f"Milk\x00{tag}"),
        headers={**shopper, "HX-Request": "true"},
    )
    assert answer.code == 400, answer.body
    assert "must not contain a control character" in answer.body.decode()
    assert db.watchlists.count_documents({"user_id": alice.user_id}) == 0

    _, boss = await login(fetch, admin.username, admin.password)
    headers = {**boss, "HX-Request": "true"}
    fields = {"store_name": "Fresh Mart", "item_name": f"Tea\u202e{tag}", "price": "1.99"}
    answer = await fetch(
        "/fragments/admin/prices", "POST", form(**fields, regular_price="2.99"), headers=headers
    )
    assert answer.code == 400, answer.body
    assert "must not contain a bidi control" in answer.body.decode()
    assert db.prices.count_documents({"item_name": {"$regex": tag}}) == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_a_csv_row_with_a_bad_name_is_rejected_by_line_and_the_rest_applied(
    fetch, ws_connect, db, admin
):
    tag = uuid.uuid4().hex[:8]
    admin_ws = await ws_connect(f"?format=json&token={admin.token}")
    csv_text = (
        "store_name,item_name,price_in_cents,regular_price_in_cents\n"
        f"Fresh Mart,Oats {tag},150,300\n"  # line 2
        f"Fresh Mart,Bad\x00{tag},150,300\n"  # line 3: NUL
        f"Fresh Mart\x1b[31m,Rice {tag},150,300\n"  # line 4: ESC in the store
        f"Fresh Mart,Tea \u202e{tag},150,300\n"  # line 5: right-to-left override
        f"Fresh Mart,Rice {tag},250,300\n"  # line 6
    )
    response = await fetch(
        "/api/price-imports", "POST", csv_text, headers={**admin.auth, "Content-Type": "text/csv"}
    )
    assert response.code == 202, response.body
    done = await admin_ws.recv_type("job-complete", timeout=30, skip=("job-progress",))
    data = done["data"]
    assert data["status"] == "partial" and data["applied"] == 2
    assert [r["line"] for r in data["rejected"]] == [3, 4, 5]
    assert "control character" in data["rejected"][0]["reason"]
    assert "bidi control" in data["rejected"][2]["reason"]
    stored = sorted(p["item_name"] for p in db.prices.find({"item_name": {"$regex": tag}}))
    assert stored == [f"Oats {tag}", f"Rice {tag}"]


def test_create_user_refuses_a_name_with_a_control_character(env, db):
    name = f"eve\x1b[2J{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [sys.executable, "-m", "notifier", "create-user", name, "--password-stdin"],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "control character" in done.stderr
    assert db.users.count_documents({"username": name}) == 0


@pytest.mark.gen_test(timeout=60)
async def test_an_email_subject_carries_no_control_or_bidi_character(
    config, db, sync_redis, mailbox, alice
):
    """A name stored before the rule (straight into the database) still makes a clean
    header: NUL is not allowed in mail headers, and an override can disguise text."""
    service = EmailService(config, db, sync_redis)
    item = f"Tea\x1b\x00\x07\u202e{uuid.uuid4().hex[:6]}"
    doc = NotificationWriter(db).create(
        alice.user_id,
        "deal-notification",
        {
            "deals": [
                {
                    "item_name": item,
                    "best_price_in_cents": 199,
                    "regular_price_in_cents": 299,
                    "store_name": "Fresh\x00Mart",
                    "store_id": "fresh-mart",
                }
            ],
            "user_id": alice.user_id,
            "message": "You have 1 new deal(s) on your watched items!",
            "headline": f"{item} $1.99 at Fresh\x00Mart",
        },
    )
    email_id = service.plan_for_deal(doc)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, service.send, email_id, "task-subject")
    [msg] = await loop.run_in_executor(None, mailbox[0].wait_for, f"{alice.username}@example.test")
    subject = str(msg["Subject"])
    assert "Tea" in subject and "$1.99" in subject
    assert not any(unicodedata.category(c) == "Cc" or c in "\u202e\u2066" for c in subject), repr(
        subject
    )
