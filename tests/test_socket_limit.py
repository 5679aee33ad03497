"""At most CONNECTIONS_PER_USER sockets per user: opening one more closes the oldest."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from websockets.asyncio import client as ws_client
from websockets.exceptions import InvalidStatus

from notifier.realtime.socket_limit import BUDGET
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
def test_a_burst_of_handshakes_is_held_to_the_budget_and_the_limit_by_a_real_web_process(
    env, alice
):
    """150 sockets of one user opened at once: the user's budget lets BUDGET handshakes
    through (429 for the rest), and of those exactly the limit stay open: every one
    counts against it (none skips it for want of a Redis connection)."""
    web = WebProcess(env)
    web.start()
    url = web.url.replace("http", "ws") + f"/ws?format=json&token={alice.token}"

    async def burst() -> list[int | str | None]:
        socks = await asyncio.gather(
            *(ws_client.connect(url) for _ in range(BURST)), return_exceptions=True
        )
        opened = [s for s in socks if not isinstance(s, BaseException)]
        refused = [s for s in socks if isinstance(s, BaseException)]
        assert all(isinstance(e, InvalidStatus) for e in refused), refused[:1]
        try:
            # Each eviction follows its handshake: wait for them all.
            async def outcome(sock: Any) -> int | None:
                try:
                    async with asyncio.timeout(10):
                        await sock.wait_closed()
                    return sock.close_code
                except TimeoutError:
                    return None  # still open

            closed: list[int | str | None] = list(
                await asyncio.gather(*(outcome(s) for s in opened))
            )
        finally:
            await asyncio.gather(*(s.close() for s in opened))
        return closed + [e.response.status_code for e in refused]  # type: ignore[union-attr]

    try:
        codes = asyncio.run(burst())
    finally:
        web.stop()
    limit = 20  # CONNECTIONS_PER_USER's default
    assert codes.count(429) == BURST - BUDGET
    assert codes.count(None) == limit
    assert codes.count(4008) == BUDGET - limit


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
