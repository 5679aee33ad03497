"""At most CONNECTIONS_PER_USER sockets per user: opening one more closes the oldest."""

from __future__ import annotations

import dataclasses

import pytest


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
