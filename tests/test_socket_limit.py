"""At most CONNECTIONS_PER_USER sockets per user: opening one more closes the oldest."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from websockets.asyncio import client as ws_client

from tests.helpers import WebProcess


@pytest.fixture
def app_config(config):
    return dataclasses.replace(config, connections_per_user=2)


@pytest.mark.gen_test
async def test_the_oldest_socket_is_closed_with_4008_when_the_user_opens_one_too_many(
    ws_connect, alice, bob
):
    oldest = await ws_connect(f"?format=json&token={alice.token}")
    middle = await ws_connect(f"?format=json&token={alice.token}")
    bobs = await ws_connect(f"?format=json&token={bob.token}")
    newest = await ws_connect(f"?format=json&token={alice.token}")
    assert await oldest.closed() == (4008, "too many connections")
    for sock in (middle, newest, bobs):
        sock.send_json({"type": "ping"})
        assert (await sock.recv_json())["type"] == "pong"


BURST = 150


@pytest.mark.timeout(120)
def test_a_burst_of_handshakes_is_held_to_the_limit_by_a_real_web_process(env, alice):
    """150 sockets of one user opened at once: every handshake counts against the limit
    (none skips it for want of a Redis connection), so exactly the limit stay open."""
    web = WebProcess(env)
    web.start()
    url = web.url.replace("http", "ws") + f"/ws?format=json&token={alice.token}"

    async def burst() -> list[int | None]:
        socks = await asyncio.gather(*(ws_client.connect(url) for _ in range(BURST)))
        closed: list[int | None] = []
        try:
            # Each eviction follows its handshake: wait for them all.
            async def outcome(sock: Any) -> int | None:
                try:
                    async with asyncio.timeout(10):
                        await sock.wait_closed()
                    return sock.close_code
                except TimeoutError:
                    return None  # still open

            closed = list(await asyncio.gather(*(outcome(s) for s in socks)))
        finally:
            await asyncio.gather(*(s.close() for s in socks))
        return closed

    try:
        codes = asyncio.run(burst())
    finally:
        web.stop()
    limit = 20  # CONNECTIONS_PER_USER's default
    assert codes.count(None) == limit
    assert codes.count(4008) == BURST - limit


@pytest.mark.gen_test(timeout=90)
async def test_a_socket_on_another_process_is_evicted_through_the_bus(ws_connect, env, alice):
    oldest = await ws_connect(f"?format=json&token={alice.token}")  # on the test's process
    web = WebProcess(env)  # another process, with the default limit of 20
    web.start()
    url = web.url.replace("http", "ws") + f"/ws?format=json&token={alice.token}"
    try:
        socks = [await ws_client.connect(url) for _ in range(20)]
        assert await oldest.closed() == (4008, "too many connections")
        for sock in socks:
            await sock.close()
    finally:
        web.stop()
