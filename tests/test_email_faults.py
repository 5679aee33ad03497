"""Workers killed with SIGKILL mid-task: the task comes back (acks_late) and, in the end,
every user has exactly one notification and one email."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from celery import Celery

from notifier.dev.embedded import free_port, worker_argv
from notifier.email.service import EmailService
from notifier.notifications.store import NotificationWriter
from notifier.realtime import bus
from notifier.realtime.events import NotificationEvent
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from notifier.validation import item_key
from tests.conftest import Mailbox, start_worker, wait_worker_ready

SOLO = worker_argv(pool="solo")  # one task at a time: a kill lands mid-task


class StallingMailbox(Mailbox):
    """Holds the first message's DATA open forever (the sender dies there), then accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.Event().wait()  # never answers; the client is killed meanwhile
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def stalling_smtp() -> Iterator[tuple[StallingMailbox, int]]:
    from aiosmtpd.controller import Controller

    box, port = StallingMailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_send_is_retried_and_sends_once(
    env, config, db, sync_redis, redis_server, stalling_smtp, alice, tmp_path
):
    box, port = stalling_smtp
    broker = f"{redis_server.url}/7"  # its own queue: the session's worker never sees it
    worker_env = {
        **env,
        "REDIS_URL": broker,
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "BROKER_VISIBILITY_TIMEOUT": "2",
    }
    log = tmp_path / "worker.log"
    control = Celery(broker=broker, set_as_current=False)
    doc = NotificationWriter(db).create(
        alice.user_id,
        "deal-notification",
        {
            "deals": [],
            "user_id": alice.user_id,
            "message": "You have 1 new deal(s) on your watched items!",
        },
    )
    email_id = EmailService(config, db, sync_redis).plan_for_deal(doc)
    assert email_id

    first = start_worker(SOLO, worker_env, log)
    second = None
    try:
        wait_worker_ready(broker, first, log)
        control.send_task("tasks.email.send_email", args=[email_id])
        assert box.stalled.wait(30), "the worker never started sending"
        first.kill()  # SIGKILL in the middle of the SMTP transaction
        first.wait()
        assert db.emails.find_one({"_id": email_id})["status"] == "sending"

        second = start_worker(SOLO, worker_env, log)  # the task comes back (acks_late)
        [msg] = box.wait_for(f"{alice.username}@example.test", 1, timeout=60)
        assert msg["Subject"] == "You have 1 new deal(s) on your watched items!"
        # A second email through the same single-task worker: when it arrives, the first
        # task has finished, so any repeat of the first would have been sent by now.
        later = NotificationWriter(db).create(
            alice.user_id,
            "deal-notification",
            {
                "deals": [],
                "user_id": alice.user_id,
                "message": "You have 2 new deal(s) on your watched items!",
            },
        )
        later_id = EmailService(config, db, sync_redis).plan_for_deal(later)
        control.send_task("tasks.email.send_email", args=[later_id])
        got = box.wait_for(f"{alice.username}@example.test", 2, timeout=60)
        assert [m["Subject"] for m in got] == [
            "You have 1 new deal(s) on your watched items!",
            "You have 2 new deal(s) on your watched items!",
        ]
        assert db.emails.find_one({"_id": email_id})["status"] == "sent"
    finally:
        control.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)


SHOPPERS = 120  # in three chunks of 40: the check is far from done when its first chunk is out


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_deal_check_leaves_one_notification_and_one_email_each(
    env, db, sync_redis, redis_server, mailbox, item, tmp_path
):
    box, _ = mailbox
    broker = f"{redis_server.url}/8"  # its own queue: the session's worker never sees it
    worker_env = {
        **env,
        "REDIS_URL": broker,
        "BROKER_VISIBILITY_TIMEOUT": "2",
        "DEAL_CHECK_CHUNK_USERS": "40",
        "EMAIL_ACK_WAIT": "0",
    }
    tag = uuid.uuid4().hex[:8]
    names = [f"shopper-{tag}-{i}" for i in range(SHOPPERS)]
    ids = db.users.insert_many(
        [
            {"username": n, "password_hash": "!", "role": "shopper", "email": f"{n}@example.test"}
            for n in names
        ]
    ).inserted_ids
    shoppers = [str(i) for i in ids]
    requester = str(ObjectId())  # gets the job-complete notification when the check is done
    apply(db, [watch(u, WatchInput(item)) for u in shoppers])
    apply(db, record_price(PriceInput("Fresh Mart", item, 150, 300))[1])
    events = sync_redis.pubsub(ignore_subscribe_messages=True)
    events.psubscribe("notifier:u:*")  # every user's channel (pub/sub spans databases)
    control = Celery(broker=broker, set_as_current=False)
    log = tmp_path / "worker.log"
    workers = [start_worker(SOLO, worker_env, log)]
    try:
        wait_worker_ready(broker, workers[0], log)
        control.send_task(
            "tasks.deals.check_deals",
            task_id=str(uuid.uuid4()),
            kwargs={"item_keys": [item_key(item)], "requested_by": requester},
        )
        next_event(events, lambda e: getattr(e, "user_id", None) in set(shoppers))
        workers[0].kill()  # SIGKILL the whole (solo) worker mid-check
        workers[0].wait()
        notified = db.notifications.count_documents({"user_id": {"$in": shoppers}})
        assert 0 < notified < SHOPPERS, "the worker was not killed mid-check"
        print(f"killed the worker after {notified} of {SHOPPERS} notifications")

        workers.append(start_worker(SOLO, worker_env, log))  # the check comes back (acks_late)
        done = next_event(events, told(requester), timeout=90)
        assert json.loads(done.payload("json"))["data"]["status"] == "succeeded"
        # What beat does every minute: emails the killed check never decided are sent now.
        control.send_task("tasks.email.send_due_emails")
        for name in names:
            box.wait_for(f"{name}@example.test", 1, timeout=60)
        # One more task through the same single-task worker: when it is done, every task
        # queued before it is too, so a duplicate would have been sent by now.
        control.send_task(
            "tasks.deals.check_deals",
            task_id=str(uuid.uuid4()),
            kwargs={"item_keys": [item_key(item)], "requested_by": requester},
        )
        next_event(events, told(requester), timeout=60)
    finally:
        control.close()
        events.close()
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
    for user_id, name in zip(shoppers, names, strict=True):
        assert db.notifications.count_documents({"user_id": user_id}) == 1
        assert len(box.to(f"{name}@example.test")) == 1


def told(user_id: str) -> Any:
    """Accepts a notification event for the user (not their job's progress)."""
    return lambda e: isinstance(e, NotificationEvent) and e.user_id == user_id


def next_event(events: Any, wanted: Any, timeout: float = 30) -> Any:
    """The next event on the bus that `wanted` accepts."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = events.get_message(timeout=left)
        if message is not None and (event := bus.decode(message["data"])) and wanted(event):
            return event
    raise AssertionError("the awaited event never came")
