"""The per-user state document: writers keep it in step, readers never count."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient

from notifier.notifications.announcements import AnnouncementRepository, LatestAnnouncement
from notifier.notifications.batch import NewNotification, store_batch
from notifier.notifications.state import recount
from notifier.notifications.store import NotificationRepository, NotificationWriter, format_id
from notifier.realtime import presence, socket_limit
from notifier.storage.batches import AskedTogether
from tests.helpers import CommandLog, login, wait_stored

USERS = 2
# One step: up to four operations started together and all finished before the check.
# ("insert", user) | ("read", user, seqs) | ("read-all", user)
op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, USERS - 1)),
    st.tuples(
        st.just("read"),
        st.integers(0, USERS - 1),
        # Seqs of this user, of the other (a seq its owner has and this one lacks), or of
        # nobody; read already or not.
        st.lists(st.integers(1, 12), min_size=1, max_size=5),
    ),
    st.tuples(st.just("read-all"), st.integers(0, USERS - 1)),
)


def check(db: Any, user_id: str) -> None:
    stored = list(db.notifications.find({"user_id": user_id}, {"seq": 1, "read": 1}))
    state = db.user_state.find_one({"_id": user_id}) or {"seq": 0, "unread": 0}
    assert state["seq"] == max((d["seq"] for d in stored), default=0)
    assert state["unread"] == sum(1 for d in stored if not d["read"])


@pytest.mark.timeout(300)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=6))
def test_the_state_matches_a_recount_after_every_step(db, config, steps):
    """Inserts from several threads (as worker processes would) race mark-reads of ids and
    of all; after each step the state holds the stored maximum seq and the unread count."""
    users = [f"prop-{uuid.uuid4().hex[:10]}" for _ in range(USERS)]
    writer = NotificationWriter(db)

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config.mongodb_uri)
        repo = NotificationRepository(client.get_default_database())
        try:
            for step in steps:
                work = []
                for o in step:
                    user = users[o[1]]
                    if o[0] == "insert":
                        data = {"message": "m", "severity": "info"}
                        work.append(asyncio.to_thread(writer.create, user, "system-message", data))
                    else:
                        work.append(repo.mark_read(user, o[2] if o[0] == "read" else None))
                await asyncio.gather(*work)
                for user in users:
                    check(db, user)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_recount_repairs_what_a_writer_that_died_mid_write_left(db):
    user = f"crash-{uuid.uuid4().hex[:10]}"
    writer = NotificationWriter(db)
    for _ in range(3):
        writer.create(user, "system-message", {"message": "m", "severity": "info"})
    # A writer inserted seq 4 and died before its state update.
    db.notifications.insert_one(
        {"user_id": user, "seq": 4, "type": "system-message", "read": False, "data": {}}
    )
    assert writer.max_seq(user) == 4  # the state's seq, then a look just past it
    assert writer.unread_count(user) == 3
    assert writer.create(user, "system-message", {"message": "m", "severity": "info"})["seq"] == 5
    assert recount(db, [user]) == 1
    check(db, user)
    assert db.user_state.find_one({"_id": user})["unread"] == 5


@pytest.mark.gen_test
async def test_pages_api_and_socket_show_the_states_count_not_a_count_of_documents(
    fetch, ws_connect, db, alice
):
    writer = NotificationWriter(db)
    for i in range(3):
        writer.create(alice.user_id, "system-message", {"message": f"n{i}", "severity": "info"})
    # Deliberately wrong: if anything counted the 3 unread, it would show 3.
    db.user_state.update_one({"_id": alice.user_id}, {"$set": {"unread": 777}})
    listed = json.loads((await fetch("/api/notifications", headers=alice.auth)).body)
    assert listed["unread_count"] == 777 and len(listed["items"]) == 3
    _, browser = await login(fetch, alice.username, alice.password)
    for path in ("/", "/history"):
        page = (await fetch(path, headers=browser)).body.decode()
        badge = re.search(r'id="unread-badge"[^>]*>(\d+)<', page)
        assert badge and badge.group(1) == "777", path
    sock = await ws_connect(f"?format=json&token={alice.token}", established=False)
    assert (await sock.recv_type("connection-established"))["data"]["unread_count"] == 777
    db.user_state.update_one({"_id": alice.user_id}, {"$set": {"unread": -2}})
    listed = json.loads((await fetch("/api/notifications", headers=alice.auth)).body)
    assert listed["unread_count"] == 0  # clamped


@pytest.mark.gen_test
async def test_a_connect_records_the_socket_and_presence_in_redis(ws_connect, sync_redis, alice):
    await ws_connect(f"?format=json&token={alice.token}")  # greeted: open() has run
    sockets = sync_redis.zrange(socket_limit.KEY.format(alice.user_id), 0, -1)
    assert len(sockets) == 1 and sockets[0].startswith(b"test:1:")
    assert sync_redis.ttl(socket_limit.KEY.format(alice.user_id)) > 3600
    entry = sync_redis.hget(presence.KEY.format(alice.user_id), "test:1")
    assert entry is not None and float(entry) > datetime.now(UTC).timestamp()
    assert presence.is_online(sync_redis, alice.user_id)


@pytest.mark.gen_test
async def test_a_user_without_a_state_reads_as_empty_and_nothing_is_written(db, config, alice):
    """A connect never writes (issue 19): no state document means no notifications yet."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config.mongodb_uri)
    try:
        db.user_state.delete_one({"_id": alice.user_id})
        state = await NotificationRepository(client.get_default_database()).state(alice.user_id)
        assert (state.max_seq, state.unread_count) == (0, 0)
        assert state.announcements_seen_at is not None  # the users document's, from creation
        assert db.user_state.find_one({"_id": alice.user_id}) is None
        NotificationWriter(db).create(alice.user_id, "system-message", {"message": "m"})
        again = await NotificationRepository(client.get_default_database()).state(alice.user_id)
        assert (again.max_seq, again.unread_count) == (1, 1)
    finally:
        await client.close()


def test_latest_announcement_says_when_a_connect_may_skip_the_query():
    latest = LatestAnnouncement()
    seen = datetime(2026, 3, 1, tzinfo=UTC)
    assert latest.may_be_news(seen)  # not loaded yet: unsure
    latest._known = True  # loaded: there are none
    assert not latest.may_be_news(seen)
    assert not latest.may_be_news(None)  # none at all: nothing to see, with a mark or not
    latest.saw({"created_at": "2026-02-28T10:00:00.000Z"})
    assert not latest.may_be_news(seen)
    assert latest.may_be_news(None)  # a user with no mark may not have seen that one
    latest.saw({"created_at": (seen + timedelta(milliseconds=1)).isoformat()})
    assert latest.may_be_news(seen)
    latest.saw({"created_at": "2026-01-01T00:00:00.000Z"})  # older: the newest stays
    assert latest.may_be_news(seen)
    latest._known, latest._newest = True, None
    latest.saw({"created_at": "now"})  # unreadable: load again before trusting it
    assert latest.may_be_news(seen)


@pytest.mark.gen_test
async def test_handshakes_arriving_together_share_one_load_of_the_newest_announcement(config):
    """A reconnect storm after a start or a bus gap: one query, not one per handshake."""
    log = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        config.mongodb_uri, event_listeners=[log]
    )
    try:
        repo = AnnouncementRepository(client.get_default_database())
        latest = LatestAnnouncement()

        def loads() -> int:
            return sum(
                1 for name, coll, _ in log.events if (name, coll) == ("find", "announcements")
            )

        answers = await asyncio.gather(*(latest.newest(repo) for _ in range(50)))
        assert loads() == 1 and len(set(answers)) == 1
        await latest.newest(repo)
        assert loads() == 1  # known now: no query at all
        latest.forget()  # a gap on the bus: load again, once
        await asyncio.gather(*(latest.newest(repo) for _ in range(50)))
        assert loads() == 2
    finally:
        await client.close()


@pytest.mark.gen_test
async def test_replays_from_the_same_seq_share_one_query_and_miss_nothing(db, config):
    """A reconnect storm: a user's tabs, and other users, resume from the same seq at once:
    one query, each its own documents; a replay from another seq is a query of its own. A
    replay asked once that query went out reads again, and sees what was stored since."""
    user, other, third = (f"tabs-{uuid.uuid4().hex[:10]}" for _ in range(3))
    writer = NotificationWriter(db)
    for n in range(3):
        for owner in (user, other, third):
            writer.create(owner, "system-message", {"message": f"m{n}", "severity": "info"})
    log = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        config.mongodb_uri, event_listeners=[log]
    )
    try:
        repo = NotificationRepository(client.get_default_database())

        def reads() -> int:
            return sum(
                1 for name, coll, _ in log.events if (name, coll) == ("find", "notifications")
            )

        asked = [*(repo.after(user, 1, 50) for _ in range(5)), repo.after(other, 1, 50)]
        *tabs, others, thirds = await asyncio.gather(*asked, repo.after(third, 2, 50))
        assert reads() == 2  # seq 1 for two users, seq 2 for the third
        assert all(
            [(d["user_id"], d["seq"]) for d in tab] == [(user, 2), (user, 3)] for tab in tabs
        )
        assert [(d["user_id"], d["seq"]) for d in others] == [(other, 2), (other, 3)]
        assert [(d["user_id"], d["seq"]) for d in thirds] == [(third, 3)]
        first = await repo.after(user, 1, 50)  # its query went out and came back
        writer.create(user, "system-message", {"message": "m3", "severity": "info"})
        later = await repo.after(user, 1, 50)
        assert [d["seq"] for d in later] == [2, 3, 4]
        assert [d["seq"] for d in first] == [2, 3] and reads() == 4
    finally:
        await client.close()


@pytest.mark.gen_test
async def test_a_shared_read_that_fails_fails_each_caller_and_a_cancelled_one_leaves_the_rest():
    calls: list[str] = []
    reading, answer = asyncio.Event(), asyncio.Event()

    async def read(key: str) -> str:
        calls.append(key)
        reading.set()
        await answer.wait()
        if key == "bad":
            raise OSError("the server went away")
        return key.upper()

    class OneByOne(AskedTogether[str, str]):
        def _groups(self, keys: list[str]) -> list[list[str]]:
            return [[k] for k in keys]

        async def _read_many(self, keys: Sequence[str]) -> dict[str, str]:
            return {keys[0]: await read(keys[0])}

    reads = OneByOne()
    gone = asyncio.ensure_future(reads.get("ok"))
    waiting = [reads.get("ok"), reads.get("ok"), reads.get("bad"), reads.get("bad")]
    together = asyncio.gather(*waiting, return_exceptions=True)
    await reading.wait()  # the reads are out
    gone.cancel()  # a socket that closed while its replay was read
    answer.set()
    answers = await together
    assert answers[:2] == ["OK", "OK"] and calls == ["ok", "bad"]
    assert all(isinstance(a, OSError) for a in answers[2:])


@pytest.mark.parametrize("path", ["create", "store_batch"])
def test_a_mark_read_between_a_first_insert_and_its_state_update_is_counted(db, config, path):
    """The race the property above found: a user's first notification is inserted, a
    mark-read of all runs before the writer's state update, and the decrement must not
    fall on a state document that does not exist yet (unread would end at 1, not 0)."""
    user = f"first-{uuid.uuid4().hex[:10]}"
    app = f"slow-writer-{uuid.uuid4().hex[:6]}"
    slow: MongoClient[dict[str, Any]] = MongoClient(config.mongodb_uri, appName=app)
    slow_db = slow.get_default_database()
    data = {"message": "m", "severity": "info"}
    # Every state update of this writer (not of the mark-read) waits 1.5 s at the server
    # (a batch of one updates its state with findAndModify, to read its unread count).
    db.client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {
                "failCommands": ["update", "findAndModify"],
                "appName": app,
                "blockConnection": True,
                "blockTimeMS": 1500,
            },
        }
    )
    try:
        if path == "create":
            write = threading.Thread(
                target=NotificationWriter(slow_db).create, args=(user, "system-message", data)
            )
        else:
            write = threading.Thread(
                target=store_batch, args=(slow_db, [NewNotification(user, "system-message", data)])
            )
        write.start()
        # Inserted; its state update waits at the server.
        wait_stored(
            db.notifications,
            lambda: db.notifications.find_one({"user_id": user}) is not None,
            "the notification was never inserted",
            10,
        )

        async def read_all() -> list[str]:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config.mongodb_uri)
            try:
                return await NotificationRepository(client.get_default_database()).mark_read(
                    user, None
                )
            finally:
                await client.close()

        assert asyncio.run(read_all()) == [format_id(1)]
        write.join(10)
        assert not write.is_alive()
    finally:
        db.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        slow.close()
    check(db, user)
