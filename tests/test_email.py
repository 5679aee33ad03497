"""Email for offline shoppers, against a real SMTP server (aiosmtpd) and the real worker."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from notifier.accounts.preferences import Preferences
from notifier.email.service import EmailService
from notifier.notifications.store import NotificationWriter
from notifier.realtime.presence import KEY, ONLINE_KEY, TTL, is_online, online_now
from tests.helpers import acknowledge, assert_no_email


def set_prefs(db, user, **prefs):
    db.users.update_one(
        {"_id": ObjectId(user.user_id)},
        {"$set": {"preferences": Preferences.parse(prefs).to_json()}},
    )


def deal(db, user, item="Tea", created_at=None, read=False):
    doc = NotificationWriter(db).create(
        user.user_id,
        "deal-notification",
        {
            "deals": [
                {
                    "item_name": item,
                    "best_price_in_cents": 199,
                    "regular_price_in_cents": 299,
                    "store_name": "Fresh Mart",
                    "store_id": "fresh-mart",
                }
            ],
            "user_id": user.user_id,
            "message": "You have 1 new deal(s) on your watched items!",
        },
    )
    changes = {"read": read} | ({"created_at": created_at} if created_at else {})
    db.notifications.update_one({"_id": doc["_id"]}, {"$set": changes})
    return doc


@pytest.fixture
def service(config, db, sync_redis):
    return EmailService(config, db, sync_redis)


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_an_offline_shopper_gets_exactly_one_email(fetch, db, mailbox, alice, admin, item):
    box, _ = mailbox
    address = f"{alice.username}@example.test"
    await fetch("/api/watchlist", "POST", {"item_name": item}, headers=alice.auth)
    await fetch("/api/watchlist", "POST", {"item_name": item + " 2"}, headers=alice.auth)
    price = {"store_name": "Fresh Mart", "price_in_cents": 150, "regular_price_in_cents": 300}
    await fetch("/api/prices", "POST", {**price, "item_name": item}, headers=admin.auth)
    [first] = await in_thread(box.wait_for, address, 1)
    assert item in first.get_body(("plain",)).get_content()
    # A second deal: its email arrives after any duplicate of the first would have.
    await fetch("/api/prices", "POST", {**price, "item_name": item + " 2"}, headers=admin.auth)
    both = await in_thread(box.wait_for, address, 2)
    assert len({m["Message-ID"] for m in both}) == 2
    assert db.emails.count_documents({"user_id": alice.user_id}) == 2


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("worker")
def test_an_smtp_error_is_retried_with_backoff_and_sends_once(
    config, db, sync_redis, mailbox, alice
):
    from celery import Celery

    box, _ = mailbox
    address = f"{alice.username}@example.test"
    box.refuse_once.add(address)
    email_id = EmailService(config, db, sync_redis).plan_for_deal(deal(db, alice, "Matcha"))
    client = Celery(broker=config.redis_url, set_as_current=False)
    try:
        client.send_task("tasks.email.send_email", args=[email_id])
        [msg] = box.wait_for(address, 1, timeout=45)
    finally:
        client.close()
    assert box.refused == [address]  # refused once, then accepted on the retry
    assert "Matcha" in msg.get_body(("plain",)).get_content()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_a_shopper_whose_page_acknowledged_the_deal_gets_no_email(
    fetch, ws_connect, db, mailbox, alice, admin, item
):
    from notifier.shopping.prices import PriceInput, record_price
    from notifier.storage.writes import apply

    await fetch("/api/watchlist", "POST", {"item_name": item}, headers=alice.auth)
    sock = await ws_connect(f"?format=json&token={alice.token}")
    admin_ws = await ws_connect(f"?format=json&token={admin.token}")
    apply(db, record_price(PriceInput("Value Foods", item, 100, 200))[1])
    await fetch("/api/deal-checks", "POST", headers=admin.auth)
    # Acknowledged as soon as it arrives, as the page does: EMAIL_ACK_WAIT (5 s here) runs
    # from when it was stored, so waiting for the job to finish first would race it.
    note = await sock.recv_type("deal-notification", timeout=30)
    assert note["data"]["deals"][0]["item_name"] == item
    await acknowledge(sock, note["data"]["id"])  # the ack is stored
    await admin_ws.recv_type("job-complete", timeout=30, skip=("job-progress",))
    # Undecided until EMAIL_ACK_WAIT has passed, then decided: no email.
    await in_thread(assert_no_email, db, mailbox[0], alice)


def test_an_email_has_text_html_and_one_click_unsubscribe_headers(service, db, mailbox, alice):
    doc = deal(db, alice, "Oolong")
    email_id = service.plan_for_deal(doc)
    assert email_id and service.send(email_id, "task-1") == "sent"
    [msg] = mailbox[0].wait_for(f"{alice.username}@example.test")
    assert msg["Subject"] == "You have 1 new deal(s) on your watched items!"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(
        r"<http://localhost:\d+/unsubscribe\?token=[\w.%-]+>", msg["List-Unsubscribe"]
    )
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Oolong: $1.99 (was $2.99) at Fresh Mart" in text
    assert "<strong>$1.99</strong>" in html


def test_a_duplicated_or_late_task_sends_nothing(service, db, mailbox, alice):
    email_id = service.plan_for_deal(deal(db, alice))
    assert service.plan_for_deal(db.notifications.find_one({"user_id": alice.user_id})) is None
    assert service.send(email_id, "task-a") == "sent"
    assert service.send(email_id, "task-b").startswith("skipped")
    assert service.send(email_id, "task-a").startswith("skipped")
    assert len(mailbox[0].to(f"{alice.username}@example.test")) == 1


def test_quiet_hours_hold_the_email_until_they_end(service, db, alice):
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(hours=1)).strftime("%H:%M"),
        (now + timedelta(hours=2)).strftime("%H:%M"),
    )
    set_prefs(db, alice, quiet_hours_start=start, quiet_hours_end=end, timezone="UTC")
    doc = deal(db, alice)
    assert service.plan_for_deal(doc) is None  # held, not due
    held = db.emails.find_one({"user_id": alice.user_id})
    assert held["status"] == "pending"
    send_after = held["send_after"].replace(tzinfo=UTC)
    assert now < send_after <= now + timedelta(hours=2, minutes=1)
    assert held["_id"] not in service.due(now)
    assert service.send(held["_id"], "early").startswith("skipped")
    assert held["_id"] in service.due(send_after + timedelta(seconds=1))


def test_mode_never_and_digest_modes_send_no_immediate_email(service, db, alice):
    for mode in ("never", "hourly", "daily"):
        set_prefs(db, alice, email_mode=mode)
        assert service.plan_for_deal(deal(db, alice)) is None
    assert db.emails.count_documents({"user_id": alice.user_id}) == 0


def test_always_emails_even_when_acknowledged_and_online(service, db, sync_redis, alice):
    set_prefs(db, alice, email_mode="always")
    sync_redis.hset(KEY.format(alice.user_id), "some-process", datetime.now(UTC).timestamp() + 60)
    assert is_online(sync_redis, alice.user_id)
    doc = deal(db, alice)
    db.user_state.update_one({"_id": alice.user_id}, {"$max": {"acked_seq": doc["seq"]}})
    assert service.plan_for_deal(doc) is not None


def test_digests_group_unread_deals_and_skip_users_with_none(service, db, mailbox, make_user):
    hourly, daily, idle, all_read = (
        make_user(prefix=p) for p in ("hourly", "daily", "idle", "read")
    )
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    last_hour = hour - timedelta(minutes=30)  # inside the hour that just ended
    yesterday = hour.replace(hour=0) - timedelta(hours=12)  # inside the day that just ended
    for user, mode in (
        (hourly, "hourly"),
        (daily, "daily"),
        (idle, "hourly"),
        (all_read, "hourly"),
    ):
        set_prefs(db, user, email_mode=mode)
    for item in ("Milk", "Eggs", "Tea"):
        deal(db, hourly, item, created_at=last_hour)
    deal(db, hourly, "Too old", created_at=last_hour - timedelta(hours=2))
    deal(db, daily, "Bread", created_at=yesterday)
    deal(db, all_read, "Jam", created_at=last_hour, read=True)

    due = service.plan_digests(now)
    assert service.plan_digests(now) == []  # a window is planned once
    mine = {e["user_id"]: e for e in db.emails.find({"_id": {"$in": due}})}
    assert set(mine) == {hourly.user_id, daily.user_id}
    assert len(mine[hourly.user_id]["notification_ids"]) == 3
    for email_id in due:
        assert service.send(email_id, f"digest-{email_id}") == "sent"
    [digest] = mailbox[0].wait_for(f"{hourly.username}@example.test")
    assert digest["Subject"] == "Your hourly deal digest: 3 deal(s)"
    text = digest.get_body(("plain",)).get_content()
    assert "Milk" in text and "Eggs" in text and "Tea" in text and "Too old" not in text
    assert mailbox[0].to(f"{idle.username}@example.test") == []
    assert mailbox[0].to(f"{all_read.username}@example.test") == []


@pytest.mark.gen_test
async def test_the_unsubscribe_link_works_once_and_refuses_tampering(
    fetch, db, mailbox, config, sync_redis, alice
):
    service = EmailService(config, db, sync_redis)
    email_id = service.plan_for_deal(deal(db, alice, "Rooibos"))
    await in_thread(service.send, email_id, "task-u")
    [msg] = await in_thread(mailbox[0].wait_for, f"{alice.username}@example.test")
    url = msg["List-Unsubscribe"].strip("<>")
    path = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(path.query)
    token = query["token"][0]

    confirm = await fetch(f"/unsubscribe?{path.query}")
    assert confirm.code == 200 and "Stop deal emails?" in confirm.body.decode()
    assert (
        Preferences.from_doc(db.users.find_one({"_id": ObjectId(alice.user_id)})).email_mode
        == "offline"
    )

    one_click = urllib.parse.urlencode({"List-Unsubscribe": "One-Click"})
    done = await fetch(f"/unsubscribe?{path.query}", "POST", one_click)
    assert done.code == 200 and "unsubscribed" in done.body.decode()
    assert (
        Preferences.from_doc(db.users.find_one({"_id": ObjectId(alice.user_id)})).email_mode
        == "never"
    )

    again = await fetch(f"/unsubscribe?{path.query}", "POST", one_click)
    assert again.code == 410 and "already used" in again.body.decode()
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = await fetch("/unsubscribe?" + urllib.parse.urlencode({"token": tampered}), "POST", "")
    assert bad.code == 400 and "not valid" in bad.body.decode()
    forged = await fetch("/unsubscribe?token=eyJ1IjoieCJ9.c2ln", "GET")
    assert forged.code == 400


@pytest.mark.gen_test
async def test_preferences_api(fetch, db, alice):
    got = json.loads((await fetch("/api/preferences", headers=alice.auth)).body)
    assert got == {
        "email_mode": "offline",
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "timezone": "UTC",
        "min_discount_percent": 0,
        "push_deals": True,
        "push_announcements": True,
    }
    wanted = {
        "email_mode": "daily",
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "07:00",
        "timezone": "Europe/Paris",
        "min_discount_percent": 15,
    }
    put = await fetch("/api/preferences", "PUT", wanted, headers=alice.auth)
    defaults = {"push_deals": True, "push_announcements": True}  # fields left out
    assert put.code == 200 and json.loads(put.body) == wanted | defaults
    for bad in (
        {"email_mode": "weekly"},
        {"timezone": "Mars/Olympus"},
        {"quiet_hours_start": "22:00"},
        {"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"},
        {"min_discount_percent": 101},
        {"min_discount_percent": "10"},
        {"colour": "blue"},
        [],
    ):
        response = await fetch("/api/preferences", "PUT", bad, headers=alice.auth)
        assert response.code == 400, bad
        assert json.loads(response.body)["error"]["message"]
    assert json.loads((await fetch("/api/preferences", headers=alice.auth)).body) == (
        wanted | defaults
    )


def test_a_minimum_discount_filters_deals(db, sync_redis, alice, item):
    from notifier.realtime.bus import Publisher
    from notifier.realtime.publishing import NotificationService
    from notifier.shopping.deals import DealCheck
    from notifier.shopping.prices import PriceInput, record_price
    from notifier.shopping.watchlist import WatchInput, watch
    from notifier.storage.writes import apply

    check = DealCheck(db, NotificationService(NotificationWriter(db), Publisher(sync_redis)))
    set_prefs(db, alice, min_discount_percent=30)
    apply(db, [watch(alice.user_id, WatchInput(item))])
    apply(db, record_price(PriceInput("Fresh Mart", item, 80, 100))[1])  # 20% off
    check.run([item.casefold()])
    assert db.notifications.count_documents({"user_id": alice.user_id}) == 0
    apply(db, record_price(PriceInput("Fresh Mart", item, 70, 100))[1])  # 30% off
    check.run([item.casefold()])
    assert db.notifications.count_documents({"user_id": alice.user_id}) == 1


@pytest.mark.gen_test
async def test_presence_follows_sockets_and_expires(ws_connect, sync_redis, alice, bob):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    assert is_online(sync_redis, alice.user_id)
    assert not is_online(sync_redis, bob.user_id)
    # A crashed process's entry stops counting once its time is up.
    sync_redis.hset(KEY.format(bob.user_id), "crashed-process", datetime.now(UTC).timestamp() - 1)
    assert not is_online(sync_redis, bob.user_id)
    sock.conn.close()
    await sock.closed()


def test_each_heartbeat_rewrites_a_share_of_the_presence_well_within_its_ttl():
    """A web process rewrites its users' presence a share per report (web/stats.py): each
    user once in every PRESENCE_SHARES reports, a report late or lost still in time."""
    from web.stats import INTERVAL, PRESENCE_SHARES, presence_share

    users = [f"user-{i}" for i in range(1000)]
    shares = [presence_share(users, n) for n in range(PRESENCE_SHARES)]
    assert sorted(u for share in shares for u in share) == sorted(users)  # each exactly once
    assert all(shares)
    assert presence_share(users, PRESENCE_SHARES + 1) == shares[1]
    assert PRESENCE_SHARES * INTERVAL <= TTL / 2


@pytest.mark.gen_test
async def test_every_user_online_is_listed_until_there_are_too_many(
    ws_connect, sync_redis, alice, bob
):
    """A deal check lists the users online (issue 19, live first): the handshake puts its
    user on the list; a user whose entries have all run out is not listed though still a
    candidate; more candidates than asked for is None (the check then asks per watcher)."""
    sock = await ws_connect(f"?format=json&token={alice.token}")
    later = datetime.now(UTC).timestamp() + 60
    sync_redis.zadd(ONLINE_KEY, {bob.user_id: later})  # a candidate...
    sync_redis.hset(
        KEY.format(bob.user_id), "crashed-process", later - 61
    )  # ...whose entry ran out
    listed = online_now(sync_redis, 100_000)
    assert listed is not None and alice.user_id in listed and bob.user_id not in listed
    assert listed == sorted(listed)
    assert online_now(sync_redis, 0) is None  # alice, at least, is a candidate
    sock.conn.close()
    await sock.closed()


# aiosmtpd's own warnings about its test setup (AUTH without TLS, on loopback, on purpose).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
def test_smtp_url_user_and_password_log_in(config, db, sync_redis, alice):
    import dataclasses

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from notifier.dev.embedded import free_port
    from tests.conftest import Mailbox

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"mailer" and auth_data.password == b"p@ss word"
        return AuthResult(success=ok)

    box, port = Mailbox(), free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        good = dataclasses.replace(config, smtp_url=f"smtp://mailer:p%40ss%20word@127.0.0.1:{port}")
        service = EmailService(good, db, sync_redis)
        assert service.send(service.plan_for_deal(deal(db, alice, "Sencha")), "t-auth") == "sent"
        assert len(box.to(f"{alice.username}@example.test")) == 1
    finally:
        controller.stop()


def test_an_email_never_decided_is_decided_by_the_sweep(service, db, alice):
    doc = deal(db, alice, "Hojicha")  # stored; its task died before deciding the email
    assert doc["_id"] in [d["_id"] for d in service.undecided(timedelta(0))]
    assert service.plan_for_deal(db.notifications.find_one({"_id": doc["_id"]})) is not None
    assert doc["_id"] not in [d["_id"] for d in service.undecided(timedelta(0))]
    assert service.plan_for_deal(db.notifications.find_one({"_id": doc["_id"]})) is None  # once
