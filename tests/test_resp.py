"""RedisLink, the process's shared Redis connection (notifier/realtime/resp.py), on a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.realtime.resp import RedisLink, command


@pytest.mark.gen_test
async def test_the_commands_of_one_turn_go_out_in_one_write_each_with_its_reply(config):
    link = RedisLink.from_url(config.redis_url)
    try:
        assert await link.call("PING") == b"PONG"  # connected
        writes: list[bytes] = []
        writer = link._writer
        real_write = writer.write
        writer.write = lambda data: (writes.append(data), real_write(data))[1]
        words = [uuid.uuid4().hex for _ in range(200)]
        replies = await asyncio.gather(*(link.call("ECHO", w) for w in words))
        assert [r.decode() for r in replies] == words
        assert len(writes) == 1  # a burst of handshakes pays one send(), not one each
    finally:
        await link.aclose()


@pytest.mark.gen_test
async def test_a_command_not_yet_written_when_the_link_drops_never_goes_out_later(
    config, sync_redis
):
    link = RedisLink.from_url(config.redis_url)
    key = f"test:resp:{uuid.uuid4().hex}"
    try:
        await link.call("PING")
        unsent = link._send(command("SET", key, "x"))  # what call() does, before its turn ends
        await link.aclose()
        with pytest.raises(RedisConnectionError):
            await unsent
        assert await link.call("GET", key) is None  # a new connection, and no stale SET on it
        assert sync_redis.get(key) is None
    finally:
        await link.aclose()
