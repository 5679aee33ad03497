"""RedisLink, the process's shared Redis connection (notifier/realtime/resp.py), on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
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


@pytest.mark.gen_test
async def test_a_command_asked_while_the_link_logs_in_runs_in_its_database(config, sync_redis):
    """AUTH and SELECT go out before anything asked meanwhile, which would land in db 0."""
    user, password = f"test-resp-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    sync_redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    base = urlsplit(config.redis_url)
    link = RedisLink.from_url(f"redis://{user}:{password}@{base.hostname}:{base.port}/3")
    key = f"test:resp:{uuid.uuid4().hex}"
    logging_in = asyncio.Event()
    send = link._send

    def first_send(data: bytes) -> asyncio.Future[Any]:
        logging_in.set()  # connected: AUTH is going out
        return send(data)

    link._send = first_send  # type: ignore[method-assign]
    try:
        connecting = asyncio.ensure_future(link.call("PING"))
        await logging_in.wait()
        await link.call("SET", key, "x", "EX", 60)
        await connecting
        assert await link.call("GET", key) == b"x"
    finally:
        await link.aclose()
        sync_redis.execute_command("ACL", "DELUSER", user)
        for db in (0, 3):
            redis.Redis(host=base.hostname, port=base.port, db=db).delete(key)
