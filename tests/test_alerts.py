"""Alert rules a shopper would choose, against real MongoDB and Redis (issue 20 point 1).

Each price is posted and checked as the scheduled check does (the item's watchers, in
chunks): only news is an alert.
"""

from __future__ import annotations

import json
import urllib.parse
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
from notifier.validation import item_key
from tests.helpers import watchlist

REGULAR = 899


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return {"item": f"Coffee beans {tag}", "other": f"Tea {tag}", "a": f"A {tag}", "b": f"B {tag}"}


def post_and_check(db, check, store, item, cents, until=None):
    """A store's new price, then the check of that item (what beat does on a change)."""
    apply(db, record_price(PriceInput(store, item, cents, REGULAR, until))[1])
    check.run([item_key(item)])


def alerted(db, user, item=None):
    """The prices the user was alerted at, oldest first (of one item, or of all)."""
    return [
        d["best_price_in_cents"]
        for n in db.notifications.find({"user_id": user.user_id}).sort("seq", 1)
        for d in n["data"]["deals"]
        if item is None or d["item_name"] == item
    ]


def test_without_a_target_only_a_new_low_alerts(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"]))])
    for cents in (549, 702, 793, 520):
        post_and_check(db, check, names["a"], names["item"], cents)
    assert alerted(db, alice) == [549, 520]  # 7.02 and 7.93 are deals, but not news


def test_with_a_target_the_crossing_alerts_and_again_after_leaving_it(db, check, alice, names):
    target = WatchInput(names["item"], target_price_in_cents=600)
    apply(db, [watch(alice.user_id, target)])
    for cents in (549, 580, 702, 590):
        post_and_check(db, check, names["a"], names["item"], cents)
    # 5.80 is dearer while still under the target: not news; 7.02 leaves it, 5.90 crosses again.
    assert alerted(db, alice) == [549, 590]


def test_with_a_target_a_lower_price_under_it_alerts(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"], target_price_in_cents=600))])
    for cents in (590, 595, 560, 560, 700):
        post_and_check(db, check, names["a"], names["item"], cents)
    assert alerted(db, alice) == [590, 560]


def test_an_expired_deal_arms_the_target_again(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"], target_price_in_cents=600))])
    post_and_check(db, check, names["a"], names["item"], 550)
    db.prices.update_many(  # the deal ran out: no price at all now
        {"item_key": item_key(names["item"])},
        {"$set": {"valid_until": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    check.run([item_key(names["item"])])
    assert "target_low" not in db.watchlists.find_one({"user_id": alice.user_id})
    post_and_check(db, check, names["b"], names["item"], 580)
    assert alerted(db, alice) == [550, 580]


def test_several_stores_at_once_follow_the_best_price(db, check, alice, bob, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"]))])
    apply(db, [watch(bob.user_id, WatchInput(names["item"], target_price_in_cents=600))])
    post_and_check(db, check, names["a"], names["item"], 650)  # alice: a deal; bob: above 6.00
    post_and_check(db, check, names["b"], names["item"], 700)  # not the best: nothing
    post_and_check(db, check, names["b"], names["item"], 590)  # B is best now: new low, crossing
    post_and_check(db, check, names["a"], names["item"], 595)  # dearer than B: B stays best
    post_and_check(db, check, names["b"], names["item"], 800)  # A's 5.95 is best: not news
    post_and_check(db, check, names["a"], names["item"], 700)  # B 8.00 / A 7.00: bob re-armed
    post_and_check(db, check, names["a"], names["item"], 599)  # bob: crosses again
    assert alerted(db, alice) == [650, 590]
    assert alerted(db, bob) == [590, 599]


def test_each_item_keeps_its_own_memory(db, check, alice, names):
    for name in (names["item"], names["other"]):
        apply(db, [watch(alice.user_id, WatchInput(name))])
    post_and_check(db, check, names["a"], names["item"], 500)
    post_and_check(db, check, names["a"], names["other"], 600)  # higher, but another item
    assert alerted(db, alice) == [500, 600]


def test_the_memory_forgets_after_alert_memory_days(db, sync_redis, alice, names):
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    check = DealCheck(db, service, memory_days=7)
    apply(db, [watch(alice.user_id, WatchInput(names["item"]))])
    post_and_check(db, check, names["a"], names["item"], 500)
    post_and_check(db, check, names["a"], names["item"], 600)  # not news this week
    week_ago = datetime.now(UTC) - timedelta(days=7, minutes=1)
    db.watchlists.update_one({"user_id": alice.user_id}, {"$set": {"alerted.0.at": week_ago}})
    post_and_check(db, check, names["b"], names["item"], 650)  # 6.00 stays best: news again
    assert alerted(db, alice) == [500, 600]


def test_a_minimum_discount_filters(db, check, alice, bob, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"], min_discount_percent=30))])
    apply(db, [watch(bob.user_id, WatchInput(names["item"]))])
    post_and_check(db, check, names["a"], names["item"], 700)  # 22% off: bob only
    post_and_check(db, check, names["a"], names["item"], 630)  # 29.9% off: still not 30
    post_and_check(db, check, names["a"], names["item"], 629)  # 30.03% off
    assert alerted(db, alice) == [629]
    assert alerted(db, bob) == [700, 630, 629]


def test_a_realert_interval_holds_until_a_further_step(db, check, alice, bob, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"], realert_hours=6))])
    apply(db, [watch(bob.user_id, WatchInput(names["item"]))])
    for cents in (600, 560, 541, 530):  # 5.41 is 9.8% below 6.00; 5.30 is 11.7%
        post_and_check(db, check, names["a"], names["item"], cents)
    assert alerted(db, alice) == [600, 530]
    assert alerted(db, bob) == [600, 560, 541, 530]
    later = datetime.now(UTC) - timedelta(hours=6, minutes=1)  # the interval is over
    db.watchlists.update_one({"user_id": alice.user_id}, {"$set": {"last_alert.at": later}})
    post_and_check(db, check, names["a"], names["item"], 520)
    assert alerted(db, alice) == [600, 530, 520]


def test_one_notification_lists_every_item_that_is_news(db, check, alice, names):
    for name in (names["item"], names["other"]):
        apply(db, [watch(alice.user_id, WatchInput(name))])
    for name in (names["item"], names["other"]):
        apply(db, record_price(PriceInput(names["a"], name, 500, REGULAR))[1])
    check.run([item_key(names["item"]), item_key(names["other"])])
    [note] = db.notifications.find({"user_id": alice.user_id})
    assert note["data"]["headline"].startswith("2 deals: ")


def test_what_a_watch_remembers_is_keyed_by_fixed_fields(db, check, alice, names):
    apply(db, [watch(alice.user_id, WatchInput(names["item"], target_price_in_cents=600))])
    post_and_check(db, check, names["a"], names["item"], 550)
    stored = db.watchlists.find_one({"user_id": alice.user_id})
    assert stored["target_low"] == 550
    assert [a["price_in_cents"] for a in stored["alerted"]] == [550]
    assert names["item"] not in str(list(stored)) and item_key(names["item"]) not in list(stored)


def test_a_watch_whose_memory_was_lost_is_not_told_twice(db, check, alice, names):
    """A worker that died between the notification and the watch's update: told once still."""
    apply(db, [watch(alice.user_id, WatchInput(names["item"]))])
    post_and_check(db, check, names["a"], names["item"], 550)
    db.watchlists.update_one(
        {"user_id": alice.user_id}, {"$unset": {"alerted": "", "last_alert": ""}}
    )
    check.run([item_key(names["item"])])  # refused as told: and remembered now
    post_and_check(db, check, names["b"], names["item"], 600)
    assert alerted(db, alice) == [550]
    assert [
        a["price_in_cents"] for a in db.watchlists.find_one({"user_id": alice.user_id})["alerted"]
    ] == [550]


@pytest.mark.gen_test
async def test_the_api_sets_and_changes_a_watchs_rules(fetch, db, alice, names):
    path = "/api/watchlist/" + urllib.parse.quote(names["item"])
    body = {"item_name": names["item"], "min_discount_percent": 20}
    assert (await fetch("/api/watchlist", "POST", body, headers=alice.auth)).code == 201
    changed = await fetch(
        path, "PATCH", {"realert_hours": 6, "target_price_in_cents": 500}, headers=alice.auth
    )
    assert json.loads(changed.body) == {
        "item_name": names["item"],
        "target_price_in_cents": 500,
        "min_discount_percent": 20,
        "realert_hours": 6,
    }
    await fetch(path, "PATCH", {"min_discount_percent": None}, headers=alice.auth)
    [shown] = await watchlist(fetch, alice)
    assert (shown["min_discount_percent"], shown["realert_hours"]) == (None, 6)
