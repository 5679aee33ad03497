"""The deal check against real MongoDB and Redis (no worker): rule, grouping, idempotency."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.shopping.deals import DealCheck
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from tests.helpers import CommandLog, logged_db


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return {
        "milk": f"Milk {tag}",
        "eggs": f"Eggs {tag}",
        "tea": f"Tea {tag}",
        "a": f"Store A {tag}",
        "b": f"Store B {tag}",
    }


def post(db, store, item, price, regular, until=None):
    apply(db, record_price(PriceInput(store, item, price, regular, until))[1])


def notifications(db, user):
    return list(db.notifications.find({"user_id": user.user_id}).sort("seq", 1))


def test_one_notification_per_user_listing_all_new_deals(db, check, alice, bob, names):
    for item in ("milk", "eggs", "tea"):
        apply(db, [watch(alice.user_id, WatchInput(names[item]))])
    apply(db, [watch(bob.user_id, WatchInput(names["milk"]))])
    post(db, names["a"], names["milk"], 199, 249)
    post(db, names["a"], names["eggs"], 300, 400)
    post(db, names["a"], names["tea"], 500, 500)  # at regular price: no deal
    check.run()
    [note] = notifications(db, alice)
    assert note["type"] == "deal-notification"
    assert note["data"]["message"] == "You have 2 new deal(s) on your watched items!"
    assert note["data"]["user_id"] == alice.user_id
    assert [
        (d["item_name"], d["best_price_in_cents"], d["store_name"]) for d in note["data"]["deals"]
    ] == [(names["eggs"], 300, names["a"]), (names["milk"], 199, names["a"])]
    assert note["data"]["deals"][0]["store_id"]
    [bobs] = notifications(db, bob)
    assert [d["item_name"] for d in bobs["data"]["deals"]] == [names["milk"]]


def test_running_the_check_again_writes_nothing_new(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["milk"]))])
    post(db, names["a"], names["milk"], 199, 249)
    check.run()
    before = db.notifications.count_documents({})
    check.run()
    check.run(item_keys=[names["milk"].casefold()])
    assert db.notifications.count_documents({}) == before
    assert len(notifications(db, alice)) == 1


def test_a_new_best_price_is_a_new_deal(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["milk"]))])
    post(db, names["a"], names["milk"], 199, 249)
    check.run()
    post(db, names["b"], names["milk"], 219, 249)  # not the best price: nothing new
    check.run()
    post(db, names["b"], names["milk"], 149, 249)
    check.run()
    notes = notifications(db, alice)
    assert [n["data"]["deals"][0]["best_price_in_cents"] for n in notes] == [199, 149]
    assert notes[1]["data"]["deals"][0]["store_name"] == names["b"]


def test_the_target_price_decides_when_set(db, check, alice, bob, names):
    apply(db, [watch(alice.user_id, WatchInput(names["milk"], target_price_in_cents=150))])
    apply(db, [watch(bob.user_id, WatchInput(names["milk"], target_price_in_cents=200))])
    post(db, names["a"], names["milk"], 199, 249)
    check.run()
    assert notifications(db, alice) == []
    assert len(notifications(db, bob)) == 1


def test_expired_prices_are_not_deals(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["milk"]))])
    soon = datetime.now(UTC) + timedelta(days=1)
    post(db, names["a"], names["milk"], 199, 249, soon)
    db.prices.update_one(
        {"item_name": names["milk"]},
        {"$set": {"valid_until": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    check.run()
    assert notifications(db, alice) == []


def test_concurrent_checks_store_one_notification(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["milk"]))])
    post(db, names["a"], names["milk"], 199, 249)
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        check.run()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(notifications(db, alice)) == 1


# The commands that store a notification: one insert, or an upsert or bulk write of them.
NOTIFICATION_WRITES = {(name, "notifications") for name in ("insert", "update", "findAndModify")}


class RecordingPublisher(Publisher):
    """The real publisher, noting each publish in the order of the MongoDB commands."""

    def __init__(self, client, events):
        super().__init__(client)
        self.events = events
        self.published = []

    def publish(self, event):
        self.events.append(("publish", event.user_id, None))
        self.published.append(event)
        return super().publish(event)

    def publish_many(self, events):
        self.events.extend(("publish", event.user_id, None) for event in events)
        self.published.extend(events)
        super().publish_many(events)


def test_stored_in_mongodb_before_it_is_published(db, config, sync_redis, alice, names):
    """The order on the wire: MongoDB acknowledged the notification before its publish."""
    apply(db, [watch(alice.user_id, WatchInput(names["milk"]))])
    post(db, names["a"], names["milk"], 199, 249)
    log = CommandLog()
    with logged_db(config.mongodb_uri, log) as watched:
        publisher = RecordingPublisher(sync_redis, log.events)
        DealCheck(watched, NotificationService(NotificationWriter(watched), publisher)).run()
        order = list(log.events)
    published = order.index(("publish", alice.user_id, None))
    stored = [i for i, (name, on, _) in enumerate(order) if (name, on) in NOTIFICATION_WRITES]
    assert stored and stored[0] < published, order
    (event,) = [e for e in publisher.published if e.user_id == alice.user_id]
    envelope = json.loads(event.payload("json"))
    notification = db.notifications.find_one({"user_id": alice.user_id})
    assert envelope["data"]["id"] == notification["data"]["notification_id"]
    assert envelope["data"]["unread_count"] == 1


def test_ids_increase_in_creation_order_per_user(db, sync_redis, alice):
    writer = NotificationWriter(db)
    ids = [
        writer.create(alice.user_id, "system-message", {"message": str(i), "severity": "info"})
        for i in range(5)
    ]
    public = [n["data"]["notification_id"] for n in ids]
    assert public == sorted(public) and len(set(public)) == 5
