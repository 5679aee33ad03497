"""Issue 23, findings 3 and 4: the work one socket can cause is bounded.

A `last_id` or `resume` from long ago replays the newest REPLAY_LIMIT notifications and
then says how many older ones are in History, instead of streaming the whole history;
resumes and handshakes spend a per-user budget shared by every socket of the user; an
ack that moves nothing on writes nothing, and none reads anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from notifier.notifications.store import NotificationWriter, format_id
from notifier.realtime import socket_limit

LIMIT = 30


@pytest.fixture
def app_config(config):
    return dataclasses.replace(config, replay_limit=LIMIT)


def store(db: Any, user_id: str, n: int) -> list[str]:
    writer = NotificationWriter(db)
    return [
        writer.create(user_id, "system-message", {"message": f"#{i}"})["data"]["notification_id"]
        for i in range(n)
    ]


async def replayed(sock: Any) -> tuple[list[str], dict[str, Any]]:
    """The notifications a replay sends, and the message that ends it."""
    got = []
    while (msg := await sock.recv_json())["type"] == "system-message":
        got.append(msg["data"]["id"])
    return got, msg


@pytest.mark.gen_test(timeout=60)
async def test_a_last_id_from_long_ago_replays_the_newest_then_says_how_many_are_older(
    ws_connect, db, alice
):
    ids = store(db, alice.user_id, 100)
    sock = await ws_connect(f"?format=json&token={alice.token}&last_id={format_id(0)}")
    got, end = await replayed(sock)
    assert got == ids[-LIMIT:]  # not 100 frames: the newest LIMIT, in order
    assert end["type"] == "error" and end["data"]["code"] == "behind"
    assert end["data"]["count"] == 100 - LIMIT
    sock.send_json({"type": "resume", "last_id": format_id(0)})  # and a resume likewise
    again, end = await replayed(sock)
    assert again == ids[-LIMIT:] and end["data"] == {**end["data"], "count": 100 - LIMIT}


@pytest.mark.gen_test(timeout=60)
async def test_resumes_spend_the_users_budget_shared_by_all_their_sockets(ws_connect, db, alice):
    store(db, alice.user_id, 3)
    first = await ws_connect(f"?format=json&token={alice.token}")
    second = await ws_connect(f"?format=json&token={alice.token}")
    errors = []
    for i in range(socket_limit.BUDGET + 10):  # more resumes than the budget holds
        sock = (first, second)[i % 2]
        sock.send_json({"type": "resume", "last_id": format_id(2)})
        sock.send_json({"type": "ping"})
        while (msg := await sock.recv_json())["type"] != "pong":
            if msg["type"] == "error":
                errors.append(msg["data"]["code"])
    # Allowed: what the two handshakes left (and the little refilled meanwhile); then
    # refused, whichever socket asks.
    assert errors.count("rate_limited") >= 5
    assert len(errors) < 20


@pytest.mark.gen_test(timeout=60)
async def test_acks_that_move_nothing_on_write_nothing_and_none_reads(
    app, ws_connect, db, alice, monkeypatch
):
    ids = store(db, alice.user_id, 3)
    repo = app.settings["notifications"]
    calls: list[str] = []
    for name in ("mark_acknowledged", "acknowledge", "max_seq", "state"):
        real = getattr(repo, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return await _real(*args)

        monkeypatch.setattr(repo, name, counted)
    socks = [await ws_connect(f"?format=json&token={alice.token}") for _ in range(5)]
    calls.clear()  # the handshakes' reads
    for sock in socks:
        for _ in range(20):
            sock.send_json({"type": "ack", "last_id": "999999999999"})  # past her newest
        sock.send_json({"type": "ping"})
        assert (await sock.recv_json())["type"] == "pong"
    # Counted up to each socket's newest (her newest): stored once per socket at most,
    # never read, never past what she has.
    assert set(calls) <= {"mark_acknowledged"} and len(calls) <= len(socks)
    assert db.user_state.find_one({"_id": alice.user_id})["acked_seq"] == int(ids[-1])
    socks[0].send_json({"type": "ack", "last_id": ids[0]})  # older: nothing
    socks[0].send_json({"type": "ping"})
    assert (await socks[0].recv_json())["type"] == "pong"
    assert len(calls) <= len(socks)
