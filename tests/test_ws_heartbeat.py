"""Protocol-level pings: a client that stops answering is dropped and unregistered."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os

import pytest

from notifier.settings import Settings
from tests.helpers import one_loop_turn


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
