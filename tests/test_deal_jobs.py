"""Deal checks that scale out, against real MongoDB and Redis (no worker): chunks, batches,
no lock, only what changed, and jobs completed exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, timedelta

import pytest
import redis
import redis.asyncio as aioredis
from bson import ObjectId
from celery import Celery

from notifier.dev.embedded import free_port
from notifier.notifications.store import NotificationWriter
from notifier.realtime import bus, presence
from notifier.realtime.bus import Publisher
from notifier.realtime.presence import online_users
from notifier.realtime.publishing import NotificationService
from notifier.shopping import deals
from notifier.shopping.checks import DealCheckJobs
from notifier.shopping.deals import DealCheck
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from notifier.validation import item_key
from tests.helpers import CommandLog, logged_db, wait_stored


@pytest.fixture
def service(db, sync_redis):
    return NotificationService(NotificationWriter(db), Publisher(sync_redis))


def shoppers(db, n: int) -> list[str]:
    """n users (no email), in the order a check streams them."""
    ids = db.users.insert_many(
        [{"username": f"s-{uuid.uuid4().hex}", "password_hash": "!"} for _ in range(n)]
    ).inserted_ids
    return sorted(str(i) for i in ids)


def post(db, item, price, regular=400, store="Fresh Mart"):
    apply(db, record_price(PriceInput(store, item, price, regular))[1])


def told(db, users, item):
    """user -> the prices of `item` each was told, in seq order."""
    out: dict[str, list[int]] = {u: [] for u in users}
    for n in db.notifications.find({"user_id": {"$in": users}}).sort("seq", 1):
        for deal in n["data"].get("deals", ()):
            if deal["item_name"] == item:
                out[n["user_id"]].append(deal["best_price_in_cents"])
    return out


def test_a_check_is_split_into_chunks_of_users_streamed_in_order(db, service, item):
    users = shoppers(db, 25)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    check = DealCheck(db, service, chunk_users=10)
    chunks = list(check.chunks([item_key(item)]))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [u for c in chunks for u in c] == users


def test_users_online_come_first_in_small_chunks_then_the_rest_in_order(
    db, service, sync_redis, item, monkeypatch
):
    """Live first (issue 19): the watchers with a socket open anywhere (presence in Redis)
    are checked before everyone else, whatever their place in the id order."""
    monkeypatch.setattr(deals, "LIVE_CHUNK_USERS", 3)
    monkeypatch.setattr(deals, "ONLINE_LOOKUP", 4)
    users = shoppers(db, 25)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    live = users[3::5]  # five users spread through the id order, the last near the end
    now = time.time()
    with sync_redis.pipeline() as pipe:
        for user in live:
            pipe.hset(presence.KEY.format(user), "web:1", now + 60)
        pipe.execute()
    check = DealCheck(db, service, chunk_users=10)
    chunks = list(check.chunks([item_key(item)], online=lambda u: online_users(sync_redis, u)))
    assert chunks[:2] == [live[:3], live[3:]]  # in small chunks, as they are found
    rest = [u for u in users if u not in live]
    assert chunks[2:] == [rest[:10], rest[10:]]
    post(db, item, 150)
    result = DealCheck(db, service).run_chunk(live, [item_key(item)])  # read by $in
    assert sorted(n["user_id"] for n in result.notifications) == sorted(live)


def test_users_listed_online_are_found_from_their_own_watches_and_the_rest_skips_them(
    db, config, service, item, monkeypatch
):
    """With every user online listed (presence's online set), a check reads the live
    watchers from those users' watches, not by streaming every watcher first."""
    monkeypatch.setattr(deals, "LIVE_CHUNK_USERS", 3)
    users = shoppers(db, 25)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    live = users[3::5]
    elsewhere = shoppers(db, 2)  # online, but watching something else
    apply(db, [watch(u, WatchInput(f"Other {item}")) for u in elsewhere])
    check = DealCheck(db, service, chunk_users=10)
    log = CommandLog()
    with logged_db(config.mongodb_uri, log) as watched:
        chunks = DealCheck(watched, service).live_chunks([*live, *elsewhere], [item_key(item)])
    assert chunks == [live[:3], live[3:]]
    assert [c for c in log.events if c[1] == "watchlists"] == [("find", "watchlists", 5)]
    rest = [u for u in users if u not in live]
    assert list(check.rest_chunks([item_key(item)], set(live))) == [rest[:10], rest[10:]]


def test_a_chunk_can_leave_its_watches_memory_to_be_written_later(db, service, item):
    users = shoppers(db, 3)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    post(db, item, 150)
    check = DealCheck(db, service)
    result = check.run_chunk(users, [item_key(item)], remember_later=True)
    assert result.users_notified == 3
    assert not any("last_alert" in w for w in db.watchlists.find({"user_id": {"$in": users}}))
    check.remember(deals.memory_from_text(deals.memory_to_text(result.memory)))  # as the task
    watches = list(db.watchlists.find({"user_id": {"$in": users}}))
    assert [w["last_alert"]["price_in_cents"] for w in watches] == [150, 150, 150]
    again = check.run_chunk(users, [item_key(item)])
    assert again.users_notified == 0 and again.memory == []  # nothing new; written at once


def test_chunks_write_one_notification_per_user_with_seqs_after_the_last(db, service, item):
    users = shoppers(db, 30)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    service.notify(users[0], "system-message", {"message": "earlier", "severity": "info"})
    post(db, item, 150)
    result = DealCheck(db, service, chunk_users=7).run([item_key(item)])
    assert result.users_notified == 30 and result.deals_found == 30
    assert told(db, users, item) == {u: [150] for u in users}
    assert [n["seq"] for n in db.notifications.find({"user_id": users[0]}).sort("seq", 1)] == [1, 2]
    state = db.user_state.find_one({"_id": users[0]})
    assert (state["seq"], state["unread"]) == (2, 2)


def test_a_batch_is_listed_in_the_outbox_until_published(db, service, sync_redis, item):
    users = shoppers(db, 12)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    post(db, item, 150)
    before = db.outbox.count_documents({})
    DealCheck(db, service, chunk_users=5).run([item_key(item)])
    assert db.outbox.count_documents({}) == before  # each batch's record went once published


def test_a_batch_whose_publish_failed_is_published_by_the_sweep(db, sync_redis, item):
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens there
    failing = NotificationService(NotificationWriter(db), Publisher(dead))
    users = shoppers(db, 3)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    post(db, item, 150)
    DealCheck(db, failing).run([item_key(item)])
    [record] = [r for r in db.outbox.find() if set(users) & _owners(db, r["ids"])]
    assert len(record["ids"]) == 3  # stored, listed, not published
    events = sync_redis.pubsub()
    events.psubscribe("notifier:u:*")
    assert events.get_message(timeout=5)["type"] == "psubscribe"
    working = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    assert working.republish_pending(timedelta(0)) >= 3
    heard = set()
    while len(heard) < 3:
        message = events.get_message(timeout=10)
        assert message is not None, f"only {heard} were republished"
        event = bus.decode(message["data"])
        if getattr(event, "user_id", None) in users:
            heard.add(event.user_id)
    events.close()
    dead.close()
    assert db.outbox.find_one({"_id": record["_id"]}) is None


def _owners(db, ids):
    return {d["user_id"] for d in db.notifications.find({"_id": {"$in": ids}}, {"user_id": 1})}


def test_checks_of_the_same_item_at_once_store_no_duplicates(db, service, item):
    users = shoppers(db, 40)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    post(db, item, 150)
    barrier = threading.Barrier(4)

    def run(items):
        barrier.wait()
        DealCheck(db, service, chunk_users=9).run(items)

    # Two of the item alone and two full checks, all at once: no lock between them.
    args = [[item_key(item)], None, [item_key(item)], None]
    threads = [threading.Thread(target=run, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert told(db, users, item) == {u: [150] for u in users}
    seqs = {u: [n["seq"] for n in db.notifications.find({"user_id": u})] for u in users}
    assert all(s == [1] for s in seqs.values())


def test_a_user_told_of_one_deal_elsewhere_still_hears_of_the_others(db, service):
    [user] = shoppers(db, 1)
    milk, eggs = f"Milk {uuid.uuid4().hex[:6]}", f"Eggs {uuid.uuid4().hex[:6]}"
    apply(db, [watch(user, WatchInput(milk)), watch(user, WatchInput(eggs))])
    post(db, milk, 150)
    DealCheck(db, service).run([item_key(milk)])  # told of milk alone
    post(db, eggs, 250)
    result = DealCheck(db, service).run(None)  # a full check: milk is refused, eggs is new
    assert result.users_notified == 1
    deals = [
        [d["item_name"] for d in n["data"]["deals"]]
        for n in db.notifications.find({"user_id": user}).sort("seq", 1)
    ]
    assert deals == [[milk], [eggs]]


def test_a_price_changed_while_its_check_runs_is_told_too(db, service, item):
    """The new best price is a new deal: every watcher hears of both, once each."""
    users = shoppers(db, 30)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    post(db, item, 200)
    check = DealCheck(db, service, chunk_users=10)
    chunks = list(check.chunks([item_key(item)]))
    check.run_chunk(chunks[0], [item_key(item)])
    post(db, item, 120)  # mid-check: the remaining chunks see the new price
    for users_chunk in chunks[1:]:
        check.run_chunk(users_chunk, [item_key(item)])
    check.run([item_key(item)])  # the check the change queued
    heard = told(db, users, item)
    assert all(heard[u] == [200, 120] for u in chunks[0])
    assert all(heard[u] == [120] for c in chunks[1:] for u in c)


def test_a_job_completes_once_whoever_finishes_last(db):
    jobs = DealCheckJobs(db)
    job_id = str(uuid.uuid4())
    jobs.start(job_id, "requester", ["x"], {})
    assert not jobs.complete(jobs.chunk_done(job_id, 0, 3, 3))  # the total is not known yet
    assert not jobs.complete(jobs.chunk_done(job_id, 0, 3, 3))  # a chunk run twice counts once
    job = jobs.chunk_done(job_id, 1, 2, 4)
    assert not jobs.complete(job)
    planned = jobs.planned(job_id, 2)  # the planner counts after both finished
    assert planned.done == 2 and planned.totals() == (5, 7)
    assert jobs.complete(planned) is True
    assert jobs.complete(planned) is False  # exactly once


def test_one_task_plans_the_rest_of_a_job_once_its_live_chunks_are_done(db):
    """The last live chunk's task and the planner's backstop may both come: one plans,
    and it plans again if it is handed out again after its worker died."""
    jobs = DealCheckJobs(db)
    job_id = str(uuid.uuid4())
    jobs.start(job_id, None, ["x"], {})
    jobs.live_planned(job_id, ["u1", "u2", "u3"])
    assert not jobs.rest_due(jobs.chunk_done(job_id, 0, 1, 1), live_chunks=2)
    assert jobs.rest_due(jobs.chunk_done(job_id, 1, 2, 2), live_chunks=2)
    assert jobs.claim_rest(job_id, "last-chunk")
    assert not jobs.claim_rest(job_id, "backstop")
    assert jobs.claim_rest(job_id, "last-chunk")  # redelivered
    assert jobs.live_users(job_id) == ["u1", "u2", "u3"]
    assert not jobs.rest_due(jobs.planned(job_id, 5), live_chunks=2)  # planned: not again


def test_the_scheduled_check_takes_changed_and_expired_items_once(db):
    jobs = DealCheckJobs(db)
    jobs.changes_to_check()  # whatever earlier tests left
    db.item_changes.delete_many({})
    fresh, gone = f"fresh {uuid.uuid4().hex}", f"gone {uuid.uuid4().hex}"
    post(db, fresh, 100)
    post(db, gone, 100)
    db.item_changes.delete_one({"_id": item_key(gone)})  # only its expiry brings it back
    last = db.deal_check_schedule.find_one({"_id": "scheduled"})["checked_until"]
    expiry = last.replace(tzinfo=UTC) + timedelta(seconds=1)  # after the last run
    db.prices.update_one({"item_key": item_key(gone)}, {"$set": {"valid_until": expiry}})
    items, claimed = jobs.changes_to_check(now=expiry + timedelta(seconds=1))
    assert set(items) == {item_key(fresh), item_key(gone)}
    assert claimed == {item_key(fresh): 1}
    again, _ = jobs.changes_to_check(now=expiry + timedelta(seconds=2))
    assert again == []  # claimed by the running check; the expiry window moved on
    post(db, fresh, 90)  # changed again while its check runs
    job_id = str(uuid.uuid4())
    jobs.start(job_id, None, items, claimed)
    jobs.chunk_done(job_id, 0, 0, 0)
    assert jobs.complete(jobs.planned(job_id, 1))
    # The newer change survives the check's completion, and is the next run's.
    assert db.item_changes.find_one({"_id": item_key(fresh)})["version"] == 2
    assert jobs.changes_to_check(now=expiry + timedelta(seconds=3))[0] == [item_key(fresh)]


def test_nothing_changed_costs_three_empty_reads_and_one_write(db, config):
    """A scheduled run with nothing to do reads its schedule, the expiry window and the
    marks (finding none), moves the window on, and touches no watch, price or user."""
    DealCheckJobs(db).changes_to_check()
    db.item_changes.delete_many({})
    log = CommandLog()
    with logged_db(config.mongodb_uri, log) as watched:
        items, claimed = DealCheckJobs(watched).changes_to_check()
        commands = list(log.events)  # not the client's goodbye
    assert (items, claimed) == ([], {})
    assert commands == [
        ("find", "deal_check_schedule", 1),
        ("find", "prices", 0),
        ("find", "item_changes", 0),
        ("update", "deal_check_schedule", None),
    ]


def test_bad_user_ids_in_watches_do_not_break_a_chunk(db, service, item):
    odd = str(ObjectId())  # a watcher whose user document is gone
    apply(db, [watch(odd, WatchInput(item))])
    post(db, item, 150)
    result = DealCheck(db, service).run([item_key(item)])
    assert result.users_notified == 1


@pytest.mark.gen_test(timeout=90)
@pytest.mark.usefixtures("worker")
async def test_the_requester_sees_progress_then_the_result(fetch, ws_connect, db, admin, item):
    """A requested check is shared out in chunks (two users each in the suite); each
    finished chunk moves the requester's progress bar, and job-complete ends it."""
    apply(db, [watch(u, WatchInput(item)) for u in shoppers(db, 5)])  # three chunks at least
    sock = await ws_connect(f"?format=json&token={admin.token}")
    page = await ws_connect(f"?format=html&token={admin.token}")
    await page.recv()  # the greeting fragment
    response = await fetch("/api/deal-checks", "POST", headers=admin.auth)
    job_id = json.loads(response.body)["job_id"]
    progress = []
    while (msg := await sock.recv_json(30))["type"] == "job-progress":
        progress.append((msg["data"]["done"], msg["data"]["total"]))
        assert msg["data"]["job_id"] == job_id and msg["data"]["job"] == "deal-check"
    assert msg["type"] == "job-complete" and msg["data"]["job_id"] == job_id, msg
    total = progress[-1][1]
    assert total >= 3 and progress[-1] == (total, total)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    fragment = await page.recv(30)
    assert 'id="job-progress"' in fragment and 'hx-swap-oob="true"' in fragment


def test_a_user_without_a_state_document_still_gets_the_next_seq(db, service, item):
    """Notifications stored behind the writers' back (no state document): the batch's
    guess of seq 1 is refused by the unique index and the next free seq is claimed."""
    [user] = shoppers(db, 1)
    db.notifications.insert_many(
        [
            {"user_id": user, "seq": s, "type": "system-message", "read": True, "data": {}}
            for s in (1, 2, 3)
        ]
    )
    db.user_state.delete_one({"_id": user})
    apply(db, [watch(user, WatchInput(item))])
    post(db, item, 150)
    DealCheck(db, service).run([item_key(item)])
    [deal] = db.notifications.find({"user_id": user, "type": "deal-notification"})
    assert deal["seq"] == 4 and deal["data"]["notification_id"] == "000000000004"
    assert db.user_state.find_one({"_id": user})["seq"] == 4


@pytest.mark.gen_test(timeout=120)
@pytest.mark.usefixtures("worker")
async def test_a_check_stores_its_online_watchers_before_it_reads_the_others(db, config, item):
    """Live first on the workers (issue 19): the online watchers' chunk is handed out at
    once; the other watchers are read, chunked and stored only after it finished, so they
    do not hold the database meanwhile. Everyone hears once and the job completes."""
    users = shoppers(db, 9)
    apply(db, [watch(u, WatchInput(item)) for u in users])
    live = users[1::4]
    heartbeat = aioredis.Redis.from_url(config.redis_url)
    try:
        await presence.Presence(heartbeat, "test-process").here(live)
    finally:
        await heartbeat.aclose()
    post(db, item, 150)
    job_id = str(uuid.uuid4())
    control = Celery(broker=config.redis_url, set_as_current=False)
    try:
        control.send_task(
            "tasks.deals.check_deals", kwargs={"item_keys": [item_key(item)]}, task_id=job_id
        )
    finally:
        control.close()

    def completed() -> bool:
        return bool(db.deal_check_jobs.find_one({"_id": job_id, "completed": True}))

    await asyncio.get_running_loop().run_in_executor(
        None, wait_stored, db.deal_check_jobs, completed, "the deal check completed", 60
    )
    job = db.deal_check_jobs.find_one({"_id": job_id})
    rest = [u for u in users if u not in live]
    assert job["live_users"] == live and job["rest_by"]
    assert job["total"] == 1 + -(-len(rest) // config.deal_check_chunk_users)
    assert told(db, users, item) == {u: [150] for u in users}
    stored = {
        n["user_id"]: n["created_at"] for n in db.notifications.find({"user_id": {"$in": users}})
    }
    assert max(stored[u] for u in live) <= min(stored[u] for u in rest)
    # The live chunk left its watches' memory to a task queued behind it: it is written.

    def remembered() -> bool:
        watches = db.watchlists.find({"user_id": {"$in": users}, "item_key": item_key(item)})
        return all(w.get("last_alert", {}).get("price_in_cents") == 150 for w in watches)

    await asyncio.get_running_loop().run_in_executor(
        None, wait_stored, db.watchlists, remembered, "every watch remembers the deal", 30
    )
