"""A client that stops reading is dropped with 4009; the others do not notice."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import announcement_message, raw_ws_open, tick_until_dropped


@pytest.fixture
def app_config(config):
    return dataclasses.replace(config, ws_stall_seconds=0.5)


@pytest.mark.gen_test(timeout=90)
async def test_a_client_that_stops_reading_is_dropped_and_the_others_do_not_notice(
    app, http_port, ws_connect, sync_redis, alice, bob
):
    import asyncio

    from notifier.realtime import bus

    healthy = await ws_connect(f"?format=json&token={bob.token}")
    _, writer = await raw_ws_open(http_port, alice.token)
    registry = app.settings["registry"]
    count, body = 2000, "x" * 8000  # 16 MB: far past what the kernel buffers for a socket
    # Published in steps paced by the healthy client, so that Redis never holds more than
    # one step for the web process: a 16 MB backlog on the subscription would reach Redis's
    # pubsub output buffer limit and cut the subscriber, and with it these unstored events.
    step = 100
    for start in range(0, count, step):
        pipe = sync_redis.pipeline(transaction=False)
        for i in range(start, start + step):
            pipe.publish(
                bus.BROADCAST,
                announcement_message(
                    {
                        "id": str(i),
                        "message": f"{i} {body}",
                        "severity": "info",
                        "created_at": "now",
                    }
                ),
            )
        await asyncio.get_running_loop().run_in_executor(None, pipe.execute)
        got = 0
        while got < step:
            if (await healthy.recv_json(30))["type"] == "system-message":
                got += 1
    # Ticks until the stalled socket is noticed (at a send, after WS_STALL_SECONDS).
    await tick_until_dropped(registry, sync_redis, alice.user_id, healthy, 5000)
    writer.close()
