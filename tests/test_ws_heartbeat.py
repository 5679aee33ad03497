"""Protocol-level pings: a client that stops answering is dropped and unregistered."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os

import pytest

from notifier.settings import Settings
from tests.helpers import one_loop_turn
from web.pings import PingSweep


@pytest.fixture
def app_config(config: Settings) -> Settings:
    return dataclasses.replace(config, ws_ping_interval=0.3)


@pytest.mark.gen_test(timeout=30)
async def test_a_client_that_never_answers_pings_is_dropped(app, http_port, ws_connect, alice, bob):
    healthy = await ws_connect(f"?format=json&token={bob.token}")  # answers pings itself
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws?format=json&token={alice.token} HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 101")
    registry = app.settings["registry"]
    assert len(registry.connections_for_user(alice.user_id)) == 1

    # Read frames, never answer: pings (opcode 9) arrive, then the server gives up (8: close).
    opcodes = []
    while True:
        header = await asyncio.wait_for(reader.readexactly(2), 10)
        opcode, length = header[0] & 0x0F, header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)
        opcodes.append(opcode)
        if opcode == 8:
            break
    writer.close()
    assert 9 in opcodes
    for _ in range(1000):  # let the server's close callbacks run
        if not registry.connections_for_user(alice.user_id):
            break
        await one_loop_turn()
    assert registry.connections_for_user(alice.user_id) == []
    healthy.send_json({"type": "ping"})
    assert (await healthy.recv_json())["type"] == "pong"


class Socket:
    """A socket as the ping sweep sees it, answering every ping at once unless told not to."""

    def __init__(self) -> None:
        self.pings = 0
        self.pong_due = False
        self.closed = False

    def send_ping(self) -> bool:
        self.pings += 1
        self.pong_due = True
        return True

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = True


@pytest.mark.gen_test
async def test_a_burst_of_connects_is_pinged_a_few_at_a_time_once_an_interval():
    """300 sockets opened at once: each visit pings a handful, each socket's first ping
    comes two thirds to one interval after it opened, then one per interval."""
    sweep = PingSweep(30.0)
    sockets = [Socket() for _ in range(300)]
    buckets = [sweep.add(s) for s in sockets]
    visits = 300  # a round: the interval / MIN_TICK
    pinged_per_visit = []
    for _ in range(2 * visits):
        before = sum(s.pings for s in sockets)
        sweep.sweep()
        pinged_per_visit.append(sum(s.pings for s in sockets) - before)
        for s in sockets:
            s.pong_due = False  # every pong came back
    assert max(pinged_per_visit) <= 3
    assert sum(pinged_per_visit[: 2 * visits // 3]) == 0  # nobody before two thirds
    assert all(s.pings == 2 for s in sockets) and not any(s.closed for s in sockets)
    for s, b in zip(sockets, buckets, strict=True):
        sweep.discard(s, b)
    sweep.sweep()  # nothing left: the callback stops
    assert len(sweep) == 0
