"""Offline email is decided by what a page acknowledged (`ack`) or read, not by presence.

The session's worker runs with EMAIL_ACK_WAIT=5 (tests/conftest.py): a deal no page
acknowledged within 5 s of being stored is emailed, through the real worker and SMTP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery

from notifier.email.service import EmailService
from notifier.notifications import state
from notifier.realtime.presence import is_online
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput
from notifier.shopping.watchlist import watch as watch_item
from notifier.storage.writes import apply
from notifier.validation import item_key
from tests.helpers import (
    WebProcess,
    acknowledge,
    assert_no_email,
    deal_on_socket,
    post_price,
    raw_ws_open,
    wait_email_status,
    watch,
)
from tests.test_email import deal, set_prefs

BOUND = 15.0  # the bar: an unacknowledged deal is emailed within EMAIL_ACK_WAIT + 15 s


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def address(user) -> str:
    return f"{user.username}@example.test"


def only_deal(db, user) -> dict:
    [doc] = db.notifications.find({"user_id": user.user_id, "type": "deal-notification"})
    return doc


def assert_emailed_once_in_time(config, db, box, user) -> float:
    """The user's one deal was emailed once, within the bound; returns deal -> email seconds."""
    box.wait_for(address(user), 1, timeout=config.email_ack_wait + BOUND + 10)
    arrived = datetime.now(UTC)
    doc = only_deal(db, user)
    wait_email_status(db, f"deal-{doc['_id']}", "sent")
    stored = state.utc(doc["created_at"])
    assert stored is not None
    took = (arrived - stored).total_seconds()
    assert config.email_ack_wait <= took <= config.email_ack_wait + BOUND, took
    assert len(box.to(address(user))) == 1
    assert db.emails.count_documents({"user_id": user.user_id}) == 1
    return took


# The core, without a worker -------------------------------------------------------------


def test_an_ack_covers_everything_before_it_and_read_counts_as_seen(config, db, sync_redis, alice):
    service = EmailService(config, db, sync_redis)
    _first, second, third, fourth = (deal(db, alice, i) for i in ("A", "B", "C", "D"))
    db.user_state.update_one({"_id": alice.user_id}, state.acknowledged(second["seq"]))
    db.notifications.update_one({"_id": third["_id"]}, {"$set": {"read": True}})
    docs = list(db.notifications.find({"user_id": alice.user_id}).sort("seq", 1))
    due = service.decide(docs)
    assert due == [f"deal-{fourth['_id']}"]  # neither acknowledged nor read
    assert service.decide(docs) == []  # decided once
    assert db.notifications.count_documents({"user_id": alice.user_id, "email_pending": True}) == 0
    assert {e["_id"] for e in db.emails.find({"user_id": alice.user_id})} == set(due)


def test_the_deal_check_emails_mode_always_at_once_and_leaves_offline_pending(
    config, db, sync_redis, alice, bob
):
    service = EmailService(config, db, sync_redis)
    set_prefs(db, bob, email_mode="always")
    mine, bobs = deal(db, alice, "E"), deal(db, bob, "F")
    assert service.plan_for_deals([mine, bobs]) == [f"deal-{bobs['_id']}"]
    assert db.notifications.find_one({"_id": mine["_id"]})["email_pending"] is True
    assert "email_pending" not in db.notifications.find_one({"_id": bobs["_id"]})
    assert mine["_id"] not in [d["_id"] for d in service.undecided()]  # its wait is not over


def test_a_digest_lists_only_what_was_neither_acknowledged_nor_read(config, db, sync_redis, alice):
    service = EmailService(config, db, sync_redis)
    set_prefs(db, alice, email_mode="hourly")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    last_hour = hour - timedelta(minutes=30)
    seen = deal(db, alice, "Seen", created_at=last_hour)
    deal(db, alice, "Read", created_at=last_hour, read=True)
    unseen = deal(db, alice, "Unseen", created_at=last_hour)
    db.user_state.update_one({"_id": alice.user_id}, state.acknowledged(seen["seq"]))
    service.plan_digests(hour + timedelta(minutes=1))
    [digest] = db.emails.find({"user_id": alice.user_id, "kind": "digest"})
    assert digest["notification_ids"] == [unseen["_id"]]


# Through the socket, the web app and the real worker ------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_an_ack_is_stored_clamped_to_the_users_newest_and_bad_ones_get_errors(
    ws_connect, db, alice, bob
):
    deal(db, alice, "G")
    newest = deal(db, alice, "H")["seq"]
    sock = await ws_connect(f"?format=json&token={alice.token}")
    sock.send_json({"type": "ack", "last_id": f"{newest + 50:012d}"})  # not hers (yet)
    for bad in ({}, {"last_id": 7}, {"last_id": "../1"}, {"last_id": None}):
        sock.send_json({"type": "ack", **bad})
        error = await sock.recv_type("error")
        assert error["data"]["code"] == "invalid_input"
    sock.send_json({"type": "ping"})
    await sock.recv_type("pong")
    assert db.user_state.find_one({"_id": alice.user_id})["acked_seq"] == newest
    # Bob has nothing yet: acking an id of Alice's acknowledges nothing of his.
    theirs = await ws_connect(f"?format=json&token={bob.token}")
    await acknowledge(theirs, f"{newest:012d}")
    assert int((db.user_state.find_one({"_id": bob.user_id}) or {}).get("acked_seq", 0)) == 0


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_a_json_client_that_acknowledges_gets_no_email(
    fetch, ws_connect, db, mailbox, alice, admin, item
):
    sock, note = await deal_on_socket(fetch, ws_connect, alice, admin, item)
    await acknowledge(sock, note["data"]["id"])
    await in_thread(assert_no_email, db, mailbox[0], alice)


@pytest.mark.gen_test(timeout=90)
@pytest.mark.usefixtures("worker")
async def test_acking_another_users_id_leaves_both_users_emails_alone(
    fetch, ws_connect, db, config, mailbox, alice, bob, admin, item
):
    await watch(fetch, alice, item)
    mine = await ws_connect(f"?format=json&token={alice.token}")
    theirs = await ws_connect(f"?format=json&token={bob.token}")
    await post_price(fetch, admin, item)
    note = await mine.recv_type("deal-notification", timeout=20)
    await acknowledge(theirs, note["data"]["id"])  # Alice's id, not Bob's
    await in_thread(assert_emailed_once_in_time, config, db, mailbox[0], alice)
    # Bob's first deal gets the same id Alice's had: his earlier ack did not cover it.
    await watch(fetch, bob, item + " 2")
    await post_price(fetch, admin, item + " 2")
    await theirs.recv_type("deal-notification", timeout=20)
    await in_thread(assert_emailed_once_in_time, config, db, mailbox[0], bob)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_marking_read_before_the_wait_ends_means_no_email(
    fetch, ws_connect, db, mailbox, alice, admin, item
):
    sock, note = await deal_on_socket(fetch, ws_connect, alice, admin, item)
    sock.send_json({"type": "mark-read", "ids": [note["data"]["id"]]})
    await sock.recv_type("notification-read")
    await in_thread(assert_no_email, db, mailbox[0], alice)


@pytest.mark.gen_test(timeout=90)
@pytest.mark.usefixtures("worker")
async def test_a_half_open_socket_that_never_acknowledges_gets_exactly_one_email(
    fetch, http_port, db, config, sync_redis, mailbox, alice, admin, item
):
    await watch(fetch, alice, item)
    reader, writer = await raw_ws_open(http_port, alice.token)
    await reader.readuntil(b"connection-established")  # registered; never read again
    try:
        assert is_online(sync_redis, alice.user_id)  # presence would have swallowed it
        await post_price(fetch, admin, item)
        took = await in_thread(assert_emailed_once_in_time, config, db, mailbox[0], alice)
        assert is_online(sync_redis, alice.user_id)
        print(f"\nEMAIL_ACK_WAIT={config.email_ack_wait:g}s: deal stored -> email {took:.2f} s")
    finally:
        writer.close()


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("worker")
def test_a_web_process_killed_while_the_shopper_is_connected_leaves_one_email(
    env, config, db, sync_redis, mailbox, alice, item
):
    apply(db, [watch_item(alice.user_id, WatchInput(item))])
    web = WebProcess(env)
    web.start()
    control = Celery(broker=config.redis_url, set_as_current=False)
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=10)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws?format=json&token={alice.token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        got = b""
        while b"connection-established" not in got:  # registered and noted present
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 101")
        assert is_online(sync_redis, alice.user_id)
        assert web.proc is not None
        web.proc.kill()  # SIGKILL: nothing clears its presence entries
        web.proc.wait()
        assert is_online(sync_redis, alice.user_id)  # "online" for up to a minute more
        apply(db, record_price(PriceInput("Fresh Mart", item, 150, 300))[1])
        control.send_task("tasks.deals.check_deals", kwargs={"item_keys": [item_key(item)]})
        took = assert_emailed_once_in_time(config, db, mailbox[0], alice)
        print(f"\nafter a SIGKILLed web process: deal stored -> email {took:.2f} s")
    finally:
        sock.close()
        control.close()
        web.stop()
