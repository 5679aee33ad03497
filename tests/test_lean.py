"""Lean sockets: the expiry queue (no server), the IOStream patch, the released handshake."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref

import pytest
from tornado.iostream import IOStream

from notifier.realtime.expiry import ExpiryQueue
from web.expiry import ExpirySweep
from web.lean import NO_BUFFERS, Handshake, lazy_stream_buffers, shrink_stream


class Item:
    """Something to expire; weak-referenceable, so a test can see it is not kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed: tuple[int | None, str | None] | None = None
        self.event = asyncio.Event()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = (code, reason)
        self.event.set()


def test_due_returns_what_expired_soonest_first_and_only_once() -> None:
    queue: ExpiryQueue[str] = ExpiryQueue()
    for at, name in ((30, "c"), (10, "a"), (20, "b"), (10, "a2"), (40, "d")):
        queue.add(at, name)
    assert queue.due(5) == []
    assert queue.due(20) == ["a", "a2", "b"]
    assert queue.due(20) == []
    assert len(queue) == 2
    assert queue.due(100) == ["c", "d"]
    assert len(queue) == 0


def test_a_discarded_entry_never_comes_due_and_is_not_kept_alive() -> None:
    queue: ExpiryQueue[Item] = ExpiryQueue()
    gone, kept = Item("gone"), Item("kept")
    entry = queue.add(10, gone)
    queue.add(10, kept)
    ref = weakref.ref(gone)
    queue.discard(entry)
    queue.discard(entry)  # a second discard (on_close after the sweep closed it) is harmless
    queue.discard(None)  # closed before open() registered it
    del gone
    gc.collect()
    assert ref() is None
    assert len(queue) == 1
    assert queue.due(10) == [kept]


def test_mostly_dead_entries_are_compacted_away() -> None:
    queue: ExpiryQueue[int] = ExpiryQueue()
    entries = [queue.add(1000 + i, i) for i in range(1000)]
    for entry in entries[:900]:
        queue.discard(entry)
    assert len(queue) == 100
    assert len(queue._heap) < 200  # lazily deleted, but not without bound
    assert queue.due(10_000) == list(range(900, 1000))


@pytest.mark.gen_test
async def test_the_sweep_closes_expired_sockets_then_stops() -> None:
    sweep = ExpirySweep(4001, "token expired", every=0.05)
    expired, later, closed_first = Item("expired"), Item("later"), Item("closed first")
    sweep.add(time.time() - 1, expired)
    later_entry = sweep.add(time.time() + 3600, later)
    sweep.discard(sweep.add(time.time() - 1, closed_first))
    await asyncio.wait_for(expired.event.wait(), 5)
    assert expired.closed == (4001, "token expired")
    assert later.closed is None and closed_first.closed is None
    assert sweep._callback is not None  # one socket left: still sweeping
    sweep.discard(later_entry)
    sweep.sweep()
    assert sweep._callback is None  # nothing left: the process stops waking up


@pytest.mark.gen_test
async def test_a_lean_stream_writes_what_does_not_fit_at_once_and_gives_its_deques_back(
    iostream_as_found: None,
) -> None:
    lazy_stream_buffers()
    lazy_stream_buffers()  # idempotent
    here, there = socket.socketpair()
    stream, reader = IOStream(here), IOStream(there)
    try:
        assert stream._write_futures is NO_BUFFERS
        assert stream._write_buffer._buffers is NO_BUFFERS
        payload = bytes(range(256)) * 40_000  # 10 MB: more than the kernel takes at once
        written = stream.write(payload)
        assert stream._write_futures is not NO_BUFFERS  # pending: real deques now
        received = await reader.read_bytes(len(payload))
        await written
        assert received == payload
        shrink_stream(stream)
        assert stream._write_futures is NO_BUFFERS
        assert stream._write_buffer._buffers is NO_BUFFERS
        stream.write(b"again")  # and it writes again after being shrunk
        assert await reader.read_bytes(5) == b"again"
    finally:
        stream.close()
        reader.close()


@pytest.mark.gen_test
async def test_an_open_socket_keeps_no_handshake_state_and_still_works(app, ws_connect, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    sock.send_json({"type": "ping"})
    await sock.recv_type("pong")
    (delivery,) = app.settings["registry"].connections_for_user(alice.user_id)
    handler = delivery.transport
    assert isinstance(handler.request, Handshake)
    assert alice.token not in handler.request.uri and handler.request.uri.startswith("/ws?")
    for name in ("_headers", "ui", "_transforms", "path_args", "open_args"):
        assert name not in vars(handler), name
    assert (handler.user_id, handler.format) == (alice.user_id, "json")
    assert handler.socket_id.startswith("test:1:")
    # What runs after open still works: messages, rate limiting, marking read, closing.
    sock.send_json({"type": "mark-read", "all": True})
    sock.send_json({"type": "launch"})
    error = await sock.recv_type("error")
    assert error["data"]["code"] == "unknown_message"
    handler.close(4001, "token expired")
    assert await sock.closed(timeout=10) == (4001, "token expired")


@pytest.mark.gen_test(timeout=60)
async def test_a_closed_socket_is_freed_by_reference_counting_alone(
    app, http_server, http_port, alice, bob
) -> None:
    """Sockets open long enough are frozen out of the collector (web/serve.py): a closed
    one must be freed without it (no reference cycle), or every one would leak. Sockets
    that heard a message, were closed by the server, or went away mid-handshake too."""
    from tests.helpers import one_loop_turn, raw_ws_open

    registry = app.settings["registry"]
    gc.collect()
    gc.disable()  # from here on, only reference counting frees anything
    try:
        opened = [await raw_ws_open(http_port, t) for t in (alice.token, bob.token) * 3]
        while registry.stats()["connections"] < len(opened):
            await one_loop_turn()
        conns = registry.connections_for_user(alice.user_id)
        conns += registry.connections_for_user(bob.user_id)
        alive = weakref.WeakSet([*conns, *(c.transport for c in conns)])
        del conns
        registry.close_user(bob.user_id, 4008, "too many connections")  # by the server
        registry.send_to_all(lambda fmt: '{"type": "system-message"}')  # heard a message
        _, leaving = await asyncio.open_connection("127.0.0.1", http_port)
        leaving.write(  # a handshake whose client leaves before the answer
            f"GET /ws?format=json&token={alice.token} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        leaving.close()
        for _, writer in opened:
            writer.close()
        deadline = time.monotonic() + 10  # closes, and what runs after them, are I/O
        while (registry.stats()["connections"] or alive) and time.monotonic() < deadline:
            await one_loop_turn()
        assert registry.stats()["connections"] == 0
        # The handlers and deliveries are gone, and no collection ran.
        assert not alive, [
            (type(o).__name__, [type(r).__name__ for r in gc.get_referrers(o)]) for o in alive
        ]
    finally:
        gc.enable()


def test_sockets_read_from_a_task_of_their_own_only_on_a_checked_tornado(monkeypatch) -> None:
    import tornado
    from tornado.websocket import WebSocketProtocol13

    from web import lean

    def protocol() -> WebSocketProtocol13:
        return WebSocketProtocol13.__new__(WebSocketProtocol13)

    lean.detached_receive_works.cache_clear()
    try:
        checked = protocol()
        lean.detach_receive(checked)
        assert type(checked) is lean.DetachedReceive  # this Tornado: 6.4-6.6
        lean.detached_receive_works.cache_clear()
        monkeypatch.setattr(tornado, "version_info", (6, 7, 0, 0))
        unknown = protocol()
        lean.detach_receive(unknown)
        assert type(unknown) is WebSocketProtocol13  # a newer one: the stock protocol
    finally:
        lean.detached_receive_works.cache_clear()
