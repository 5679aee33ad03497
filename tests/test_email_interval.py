"""One deal email per decision round and user, at most one per EMAIL_MIN_INTERVAL.

Against real MongoDB and a real SMTP server (aiosmtpd). The session runs with
EMAIL_MIN_INTERVAL=0 (tests/conftest.py); these tests give the service 30 minutes and
read the clock the service is given, so nothing waits half an hour.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from notifier.email.service import EmailService
from tests.test_email import deal, set_prefs

INTERVAL = timedelta(minutes=30)


def address(user) -> str:
    return f"{user.username}@example.test"


@pytest.fixture
def service(config, db, sync_redis):
    interval = dataclasses.replace(config, email_min_interval=INTERVAL.total_seconds())
    return EmailService(interval, db, sync_redis)


@pytest.fixture
def box(mailbox):
    return mailbox[0]


def test_one_email_lists_several_deals(service, db, box, alice):
    set_prefs(db, alice, email_mode="always")
    notes = [deal(db, alice, item) for item in ("Tea", "Milk", "Eggs")]
    [email_id] = service.decide(notes)
    assert service.send(email_id, "t1") == "sent"
    [mail] = box.wait_for(address(alice), 1)
    assert mail["Subject"] == "3 deals: Tea, Milk and Eggs"
    text = mail.get_body(("plain",)).get_content()
    assert all(f"- {item}: $1.99" in text for item in ("Tea", "Milk", "Eggs"))


def test_the_interval_defers_and_never_drops(service, db, box, alice):
    set_prefs(db, alice, email_mode="always")
    [first] = service.decide([deal(db, alice, "Tea")])
    assert service.send(first, "t1") == "sent"
    box.wait_for(address(alice), 1)
    # Two rounds inside the interval: neither is due now; both wait in one email.
    assert service.decide([deal(db, alice, "Milk")]) == []
    assert service.decide([deal(db, alice, "Eggs")]) == []
    [held] = db.emails.find({"user_id": alice.user_id, "status": "pending"})
    assert len(held["notification_ids"]) == 2
    now = datetime.now(UTC)
    assert held["_id"] not in service.due(now)
    assert service.send(held["_id"], "early").startswith("skipped")
    assert held["_id"] in service.due(now + INTERVAL)
    db.emails.update_one({"_id": held["_id"]}, {"$set": {"send_after": now}})  # its time came
    assert service.send(held["_id"], "t2") == "sent"
    sent_at = db.emails.find_one({"_id": held["_id"]})["sent_at"].replace(tzinfo=UTC)
    _, second_mail = box.wait_for(address(alice), 2)
    assert second_mail["Subject"] == "2 deals: Milk and Eggs"
    # The next email is planned a whole interval after this one was sent, not before.
    [third] = [deal(db, alice, "Bread")]
    assert service.decide([third]) == []
    [later] = db.emails.find({"user_id": alice.user_id, "status": "pending"})
    assert later["notification_ids"] == [third["_id"]]
    assert abs(later["send_after"].replace(tzinfo=UTC) - (sent_at + INTERVAL)) < timedelta(
        seconds=1
    )


def test_what_was_seen_while_waiting_is_left_out(service, db, box, alice):
    """Mode offline: a deal the page acknowledged or read meanwhile is not emailed."""
    set_prefs(db, alice, email_mode="offline")
    [first] = service.decide([deal(db, alice, "Tea")])
    assert service.send(first, "t1") == "sent"
    seen, unseen = deal(db, alice, "Milk"), deal(db, alice, "Eggs")
    assert service.decide([seen, unseen]) == []
    db.notifications.update_one({"_id": seen["_id"]}, {"$set": {"read": True}})
    [held] = db.emails.find({"user_id": alice.user_id, "status": "pending"})
    db.emails.update_one({"_id": held["_id"]}, {"$set": {"send_after": datetime.now(UTC)}})
    assert service.send(held["_id"], "t2") == "sent"
    _, mail = box.wait_for(address(alice), 2)
    text = mail.get_body(("plain",)).get_content()
    assert "Eggs" in text and "Milk" not in text
