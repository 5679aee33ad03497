"""Resume and gap fill: every stored notification reaches the socket once, in order."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from notifier.migrations import list_flagged_in_outbox
from notifier.notifications.announcements import AnnouncementRepository, SeenMarks
from notifier.notifications.state import UserState
from notifier.notifications.state import from_doc as state_from_doc
from notifier.notifications.store import NotificationWriter, format_id
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from tests.helpers import announce, collect, wait_announcement_stored, wait_stored


@pytest.fixture
def service(db, sync_redis):
    return NotificationService(NotificationWriter(db), Publisher(sync_redis))


def note(service, user, text):
    return service.notify(user.user_id, "system-message", {"message": text, "severity": "info"})


@pytest.mark.gen_test
async def test_last_id_replays_what_came_after_then_goes_live(ws_connect, service, alice):
    docs = [note(service, alice, f"n{i}") for i in range(5)]
    ids = [d["data"]["notification_id"] for d in docs]
    sock = await ws_connect(f"?format=json&token={alice.token}&last_id={ids[1]}")
    assert await collect(sock, 3) == ids[2:]
    live = note(service, alice, "live")
    assert await collect(sock, 1) == [live["data"]["notification_id"]]


@pytest.mark.gen_test
async def test_without_last_id_only_new_ones_arrive(ws_connect, service, alice):
    note(service, alice, "old")
    sock = await ws_connect(f"?format=json&token={alice.token}")
    new = note(service, alice, "new")
    assert await collect(sock, 1) == [new["data"]["notification_id"]]


@pytest.mark.gen_test
async def test_a_resume_message_replays_from_its_last_id(ws_connect, service, alice):
    docs = [note(service, alice, f"n{i}") for i in range(4)]
    ids = [d["data"]["notification_id"] for d in docs]
    sock = await ws_connect(f"?format=json&token={alice.token}")
    sock.send_json({"type": "resume", "last_id": ids[0]})
    assert await collect(sock, 3) == ids[1:]


@pytest.mark.gen_test
@pytest.mark.parametrize("last_id", ["garbage", "12", "999999999999", "-00000000001"])
async def test_an_unusable_last_id_gets_an_error_and_a_fresh_list(
    ws_connect, service, alice, bob, last_id
):
    for i in range(25):
        note(service, bob, f"bob {i}")  # ids that exist, but are bob's
    mine = [note(service, alice, f"a{i}")["data"]["notification_id"] for i in range(22)]
    sock = await ws_connect(f"?format=json&token={alice.token}&last_id={last_id}")
    error = await sock.recv_type("error")
    assert error["data"]["code"] == "invalid_last_id"
    assert await collect(sock, 20) == mine[-20:]


@pytest.mark.gen_test
async def test_a_lost_live_message_is_filled_from_mongodb(ws_connect, service, db, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    writer = NotificationWriter(db)
    lost = writer.create(
        alice.user_id, "system-message", {"message": "never published", "severity": "info"}
    )
    after = note(service, alice, "published")
    assert await collect(sock, 2) == [
        lost["data"]["notification_id"],
        after["data"]["notification_id"],
    ]


@pytest.mark.gen_test
async def test_a_failed_publish_is_delivered_by_the_outbox_sweep(ws_connect, db, service, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    broken = NotificationService(NotificationWriter(db), Publisher(dead))
    doc = note(broken, alice, "published while redis was unreachable")
    assert db.outbox.find_one({"ids": doc["_id"]}) is not None  # a batch of one, listed
    assert service.republish_pending(older_than=timedelta(0)) >= 1
    assert await collect(sock, 1) == [doc["data"]["notification_id"]]
    assert db.outbox.find_one({"ids": doc["_id"]}) is None
    # Swept once: the next sweep leaves it be, and the next message is the next one.
    service.republish_pending(older_than=timedelta(0))
    later = note(service, alice, "after the sweep")
    assert await collect(sock, 1) == [later["data"]["notification_id"]]
    dead.close()


@pytest.mark.gen_test
async def test_one_left_in_the_old_flag_outbox_is_published_after_the_migration(
    ws_connect, db, service, alice
):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    # As the writer of before left a notification whose publish failed: flagged, with the
    # flag's index, and in no outbox record.
    doc = NotificationWriter(db).create(
        alice.user_id, "system-message", {"message": "flagged", "severity": "info"}
    )
    db.outbox.delete_one({"ids": doc["_id"]})
    db.notifications.update_one({"_id": doc["_id"]}, {"$set": {"unpublished": True}})
    db.notifications.create_index(
        [("created_at", 1)], name="outbox", partialFilterExpression={"unpublished": True}
    )
    assert list_flagged_in_outbox(db) >= 1
    assert "outbox" not in db.notifications.index_information()
    assert "unpublished" not in db.notifications.find_one({"_id": doc["_id"]})
    assert service.republish_pending(older_than=timedelta(0)) >= 1
    assert await collect(sock, 1) == [doc["data"]["notification_id"]]
    assert list_flagged_in_outbox(db) == 0  # run again (a release that died): nothing to do


@pytest.mark.gen_test(timeout=120)
async def test_publishing_during_a_replay_loses_and_repeats_nothing(ws_connect, service, db, alice):
    writer = NotificationWriter(db)
    for run in range(10):
        start = format_id(writer.max_seq(alice.user_id))
        backlog = [
            note(service, alice, f"r{run} old {i}")["data"]["notification_id"] for i in range(40)
        ]
        fresh: list[str] = []

        def publish_more(run: int = run, fresh: list[str] = fresh) -> None:
            for i in range(20):
                fresh.append(note(service, alice, f"r{run} new {i}")["data"]["notification_id"])

        thread = threading.Thread(target=publish_more)
        sock = await ws_connect(
            f"?format=json&token={alice.token}&last_id={start}", established=False
        )
        thread.start()  # while the socket greets and replays the backlog
        await sock.recv_type("connection-established")
        got = await collect(sock, 60, timeout=30)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        assert got == backlog + fresh, f"run {run}"
        sock.conn.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_announcements_missed_in_the_last_day_are_shown_once_on_connect(
    fetch, ws_connect, db, alice, admin
):
    old = {
        "message": "two days ago",
        "severity": "info",
        "created_at": datetime.now(UTC) - timedelta(days=2),
    }
    db.announcements.insert_one(old)
    await announce(fetch, admin, "while you were away", "warning")
    # Its copy in alice's history (a worker's) is stored before she comes back, so the
    # sockets below hear it only as the catch-up, not also live.
    await asyncio.get_running_loop().run_in_executor(
        None, wait_announcement_stored, db, alice.user_id, "while you were away"
    )
    first = await ws_connect(f"?format=json&token={alice.token}")
    missed = await first.recv_type("system-message")
    assert missed["data"]["message"] == "while you were away"
    assert missed["data"]["severity"] == "warning"
    # A second socket (another tab, or a reconnect) is not shown it again; the next thing
    # it hears is a live broadcast.
    second = await ws_connect(f"?format=json&token={alice.token}")
    await fetch(
        "/api/announcements", "POST", {"message": "live", "severity": "info"}, headers=admin.auth
    )
    assert (await second.recv_type("system-message"))["data"]["message"] == "live"
    assert (await first.recv_type("system-message"))["data"]["message"] == "live"


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("worker")
async def test_a_socket_that_heard_an_announcement_marks_it_seen_when_it_closes(
    fetch, ws_connect, db, alice, admin
):
    first = await ws_connect(f"?format=json&token={alice.token}")
    await fetch(
        "/api/announcements",
        "POST",
        {"message": "heard live", "severity": "info"},
        headers=admin.auth,
    )
    heard = await first.recv_type("system-message")
    assert heard["data"]["message"] == "heard live"
    made = datetime.fromisoformat(heard["data"]["created_at"])
    first.conn.close()

    def marked() -> bool:
        doc = db.user_state.find_one({"_id": alice.user_id}) or {}
        seen = doc.get("announcements_seen_at")
        return seen is not None and seen.replace(tzinfo=UTC) >= made

    await asyncio.get_running_loop().run_in_executor(
        None, lambda: wait_stored(db.user_state, marked, "the close never marked it seen", 10)
    )
    await asyncio.get_running_loop().run_in_executor(
        None, wait_announcement_stored, db, alice.user_id, "heard live"
    )
    again = await ws_connect(f"?format=json&token={alice.token}")
    await fetch(
        "/api/announcements", "POST", {"message": "next", "severity": "info"}, headers=admin.auth
    )
    assert (await again.recv_type("system-message"))["data"]["message"] == "next"


class UpdateCommands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.by_collection: list[tuple[str, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.by_collection.append((event.command["update"], len(event.command["updates"])))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.gen_test(timeout=30)
async def test_the_marks_of_sockets_closing_together_are_one_bulk_write(config, db):
    """300 users' marks noted within the window: one update command with 300 statements;
    a user without a state document (no notifications yet) gets one holding the mark."""
    listener = UpdateCommands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        config.mongodb_uri, event_listeners=[listener]
    )
    try:
        users = [str(ObjectId()) for _ in range(300)]
        db.user_state.insert_many([{"_id": u, "seq": 0, "unread": 0} for u in users[1:]])
        marks = SeenMarks(AnnouncementRepository(client.get_default_database()))
        until = datetime.now(UTC).replace(microsecond=0)
        for u in users:
            marks.note(u, until)
            marks.note(u, until - timedelta(minutes=1))  # an older one changes nothing
        await marks.flush()
        assert listener.by_collection == [("user_state", 300)]
        stored = list(db.user_state.find({"_id": {"$in": users}}))
        assert len(stored) == 300
        assert {d["announcements_seen_at"].replace(tzinfo=UTC) for d in stored} == {until}
        fresh = next(d for d in stored if d["_id"] == users[0])
        assert state_from_doc(fresh) == UserState(0, 0, until)  # still no notifications
        await marks.flush()  # nothing pending: nothing written
        assert len(listener.by_collection) == 1
    finally:
        await client.close()
