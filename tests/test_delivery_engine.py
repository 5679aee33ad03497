"""The delivery engine alone: every ordering and replay case, with no server at all.

A socket is an OrderedDelivery over a transport that records what was written and a
store that holds notification documents in memory; the real-server tests (test_resume,
test_faults, test_slow_client) cover the same behaviour through Tornado, Redis and MongoDB.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from notifier.notifications.state import UserState
from notifier.realtime import delivery as engine
from notifier.realtime.delivery import OrderedDelivery


class Transport:
    """Records payloads; can hold writes as unflushed, or act as a closed socket."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int | None, str | None] | None = None
        self.gone = False
        self.hold: list[asyncio.Future[None]] | None = None  # not None: writes stay unflushed

    def send_text(self, payload: str) -> Any:
        if self.gone:
            return False
        self.sent.append(payload)
        if self.hold is None:
            return True
        flushing = asyncio.get_running_loop().create_future()
        self.hold.append(flushing)
        return flushing

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = (code, reason)

    def notifications(self) -> list[int]:
        return [int(p[1:]) for p in self.sent if p.startswith("n")]


class Store:
    """Notifications of one user by seq; `gate` holds reads until it is set."""

    def __init__(self, seqs: range | list[int] = ()) -> None:
        self.docs = {s: doc(s) for s in seqs}
        self.reads = 0
        self.state_reads = 0
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()  # set once a replay has asked for documents
        self.fail = False

    async def after(self, user_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise AutoReconnect("storage is down")
        return [self.docs[s] for s in sorted(self.docs) if seq < s <= seq + limit]

    async def state(self, user_id: str) -> UserState:
        self.state_reads += 1
        if self.fail:
            raise AutoReconnect("storage is down")
        return UserState(max(self.docs, default=0), len(self.docs), None)


class Payloads:
    def notification(self, event: dict[str, Any], fmt: str) -> str:
        return "n" + str(int(event["notification"]["id"]))

    def unread(self, unread: int, fmt: str) -> str:
        return f"unread:{unread}"

    def behind(self, count: int, fmt: str) -> str:
        return f"behind:{count}"


def doc(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "type": "system-message",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "read": False,
        "data": {"message": f"m{seq}"},
    }


def live(seq: int) -> Any:
    return lambda fmt: f"n{seq}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    store: Store,
    transport: Transport | None = None,
    clock: Clock | None = None,
    replay_limit: int = engine.REPLAY_LIMIT,
) -> tuple[OrderedDelivery, Transport, list[OrderedDelivery]]:
    transport = transport or Transport()
    forgotten: list[OrderedDelivery] = []
    socket = OrderedDelivery(
        "u1",
        "json",
        "p:1",
        transport=transport,
        store=store,
        payloads=Payloads(),
        forget=forgotten.append,
        stall_seconds=5.0,
        clock=clock or Clock(),
        replay_limit=replay_limit,
    )
    return socket, transport, forgotten


async def settle(socket: OrderedDelivery) -> None:
    """Wait for a running replay (if any) to finish, cancelled or not."""
    if socket._filling is not None:
        await asyncio.wait([socket._filling], timeout=5)
    assert socket._filling is None, "the replay did not finish"


async def callbacks_ran(future: asyncio.Future[None]) -> None:
    """Wait until the done callbacks added to `future` so far (the socket's) have run.

    A finished future runs its callbacks in the order they were added, each scheduled on
    the loop: one added now runs after them, and sets the event this waits on.
    """
    ran = asyncio.Event()
    future.add_done_callback(lambda _: ran.set())
    await ran.wait()


def run(coro: Any) -> Any:
    """Run on a loop of its own, leaving the thread's current loop (pytest-tornado's) alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_the_next_seq_goes_out_a_repeat_is_dropped_and_nothing_goes_before_the_start():
    async def scenario() -> None:
        socket, transport, _ = make(Store(range(1, 4)))
        socket.greet("hello")
        socket.start_from(None, 3)
        assert socket._filling is None  # nothing to replay: no read at all
        for seq in (4, 4, 3, 5):
            socket.offer(seq, live(seq))
        assert transport.sent == ["hello", "n4", "n5"]

    run(scenario())


def test_without_last_id_the_store_is_not_read():
    async def scenario() -> None:
        store = Store(range(1, 50))
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(None, 49)
        await settle(socket)
        assert store.reads == 0 and transport.sent == ["hello"]

    run(scenario())


def test_last_id_replays_everything_after_it_in_batches_then_goes_live():
    async def scenario() -> None:
        store = Store(range(1, 451))  # more than two replay batches
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(f"{10:012d}", 450)
        await settle(socket)
        socket.offer(451, live(451))
        assert transport.notifications() == list(range(11, 452))
        assert store.reads == 3  # 200 + 200 + 40: each batch a range read

    run(scenario())


def test_a_resume_far_behind_replays_the_newest_limit_then_says_how_many_are_older():
    """Issue 23: a last_id from long ago costs REPLAY_LIMIT frames, not the whole history."""

    async def scenario() -> None:
        store = Store(range(1, 1001))
        socket, transport, _ = make(store, replay_limit=300)
        socket.greet("hello")
        socket.start_from(f"{0:012d}", 1000)
        await settle(socket)
        assert transport.notifications() == list(range(701, 1001))
        assert transport.sent[-1] == "behind:700"
        assert store.reads == 2  # 200 + 100: the 700 older ones are never read
        socket.offer(1001, live(1001))  # and live from there
        assert transport.notifications()[-1] == 1001

    run(scenario())


def test_a_gap_far_behind_is_bounded_too():
    async def scenario() -> None:
        store = Store(range(1, 11))
        socket, transport, _ = make(store, replay_limit=5)
        socket.greet("hello")
        socket.start_from(None, 10)
        store.docs.update({s: doc(s) for s in range(11, 60)})
        socket.offer(60, live(60))  # 11-59 lost on the bus
        await settle(socket)
        assert transport.notifications() == [56, 57, 58, 59, 60]
        assert "behind:45" in transport.sent

    run(scenario())


@pytest.mark.parametrize("last_id", ["12", "x" * 12, 7, f"{99:012d}", "-00000000001"])
def test_an_unusable_last_id_gets_an_error_and_the_latest_twenty(last_id):
    async def scenario() -> None:
        socket, transport, _ = make(Store(range(1, 31)))
        socket.greet("hello")
        socket.start_from(last_id, 30)
        await settle(socket)
        error = json.loads(transport.sent[1])
        assert error["type"] == "error" and error["data"]["code"] == "invalid_last_id"
        assert transport.notifications() == list(range(11, 31))

    run(scenario())


def test_a_gap_is_filled_from_the_store_while_later_live_ones_wait_their_turn():
    async def scenario() -> None:
        store = Store(range(1, 4))
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(None, 1)
        store.gate = asyncio.Event()
        socket.offer(4, live(4))  # 2 and 3 were lost on the bus
        store.docs[4] = doc(4)
        socket.offer(5, live(5))  # arrives during the replay: held
        store.docs[5] = doc(5)
        assert transport.notifications() == []
        store.gate.set()
        await settle(socket)
        assert transport.notifications() == [2, 3, 4, 5]

    run(scenario())


def test_what_arrives_during_a_replay_is_sent_once_after_it_even_if_the_replay_read_it():
    async def scenario() -> None:
        store = Store(range(1, 11))
        socket, transport, _ = make(store)
        socket.greet("hello")
        store.gate = asyncio.Event()
        socket.start_from(f"{0:012d}", 10)
        for seq in (9, 10, 11, 12):  # 9 and 10 are stored too; 11 and 12 only live so far
            socket.offer(seq, live(seq))
        store.gate.set()
        await settle(socket)
        assert transport.notifications() == list(range(1, 13))

    run(scenario())


def test_news_during_a_replay_makes_it_read_again_before_stopping():
    async def scenario() -> None:
        store = Store(range(1, 3))
        socket, transport, _ = make(store)
        socket.greet("hello")
        store.gate = asyncio.Event()
        socket.start_from(f"{0:012d}", 2)
        await store.reading.wait()  # the replay is now reading
        store.docs[3] = doc(3)
        socket.resync()  # the bus came back: the running read may predate 3
        store.gate.set()
        await settle(socket)
        assert transport.notifications() == [1, 2, 3]
        assert store.state_reads >= 2  # it looked again (and found 3 already sent)

    run(scenario())


def test_a_resync_after_rejoining_the_bus_also_sends_the_authoritative_unread_count():
    async def scenario() -> None:
        store = Store(range(1, 3))
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(None, 2)
        store.docs[3] = doc(3)
        socket.resync(refresh_unread=True)
        await settle(socket)
        assert transport.sent[1:] == ["n3", "unread:3"]

    run(scenario())


def test_messages_before_the_greeting_wait_for_it_and_keep_their_order():
    async def scenario() -> None:
        socket, transport, _ = make(Store())
        socket.send("early-1")
        socket.offer(1, live(1))  # not started: held, not queued
        socket.send("early-2")
        assert transport.sent == []
        socket.greet("hello", ["missed-announcement"])
        socket.start_from(None, 0)
        await settle(socket)
        assert transport.sent == ["hello", "early-1", "early-2", "missed-announcement", "n1"]

    run(scenario())


def test_a_socket_that_is_gone_is_forgotten_and_reports_it():
    async def scenario() -> None:
        socket, transport, forgotten = make(Store())
        socket.greet("hello")
        transport.gone = True
        assert socket.send("x") is False
        assert forgotten == [socket]

    run(scenario())


def test_a_client_that_stops_reading_is_dropped_as_too_slow_after_the_stall_time():
    async def scenario() -> None:
        clock = Clock()
        transport = Transport()
        socket, transport, forgotten = make(Store(), transport, clock)
        socket.greet("hello")
        transport.hold = []
        for i in range(engine.STALLED_AT):
            assert socket.send(f"m{i}")
        clock.now += 4.9
        assert socket.send("still within the stall time")
        clock.now += 0.2
        assert socket.send("too late") is False
        assert transport.closed == (4009, "too slow") and forgotten == [socket]

    run(scenario())


def test_a_client_that_reads_slowly_but_steadily_is_kept():
    async def scenario() -> None:
        clock = Clock()
        socket, transport, forgotten = make(Store(), Transport(), clock)
        socket.greet("hello")
        transport.hold = []
        for i in range(engine.STALLED_AT * 3):
            assert socket.send(f"m{i}")
            clock.now += 1.0
            if i % 4 == 0:  # every few seconds the client takes one
                flushed = transport.hold.pop(0)
                flushed.set_result(None)
                await callbacks_ran(flushed)
        assert transport.closed is None and forgotten == []

    run(scenario())


def test_far_too_many_unsent_drops_the_socket_at_once():
    async def scenario() -> None:
        socket, transport, forgotten = make(Store())
        socket.greet("hello")
        transport.hold = []
        for i in range(engine.MAX_UNFLUSHED):
            socket.send(f"m{i}")
        assert socket.send("one more") is False
        assert transport.closed == (4009, "too slow") and forgotten == [socket]

    run(scenario())


def test_a_failed_flush_forgets_the_socket():
    async def scenario() -> None:
        socket, transport, forgotten = make(Store())
        socket.greet("hello")
        transport.hold = []
        socket.send("m")
        transport.hold[0].set_exception(OSError("reset"))
        await callbacks_ran(transport.hold[0])
        assert forgotten == [socket]

    run(scenario())


def test_storage_failing_during_a_replay_closes_the_socket_so_the_client_resumes():
    async def scenario() -> None:
        store = Store(range(1, 5))
        store.fail = True
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(f"{0:012d}", 4)
        await settle(socket)
        assert transport.closed == (1011, "storage unavailable")

    run(scenario())


def test_stop_cancels_a_running_replay():
    async def scenario() -> None:
        store = Store(range(1, 5))
        store.gate = asyncio.Event()
        socket, transport, _ = make(store)
        socket.greet("hello")
        socket.start_from(f"{0:012d}", 4)
        await store.reading.wait()
        socket.stop()
        await settle(socket)
        store.gate.set()
        assert transport.notifications() == []

    run(scenario())
