"""An outage is an answer, not a hang: MongoDB or Redis unreachable is a 503 within
seconds, and requests work again by themselves once it is back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest

from notifier.dev.embedded import start_mongo
from tests.helpers import restartable


@pytest.fixture
def own_mongo(tmp_path: Path):
    """A SecantusDB this test may stop and start again (same port, same data)."""
    with restartable(start_mongo, tmp_path / "mongo") as box:
        yield box


@pytest.fixture
def app_config(config, own_mongo):
    return dataclasses.replace(config, mongodb_uri=own_mongo["server"].url + "/notifier")


@pytest.mark.gen_test(timeout=90)
async def test_mongodb_down_is_a_503_within_seconds_and_requests_resume(
    fetch, sync_redis, alice, own_mongo, tmp_path
):
    # alice's document is in the suite's database: her token version is taken from Redis.
    sync_redis.set(f"notifier:token-version:{alice.user_id}", 0)
    assert (await fetch("/api/notifications", headers=alice.auth)).code == 200
    server = own_mongo["server"]
    port = int(server.url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.stop)

    started = time.monotonic()
    down = await fetch("/api/notifications", headers=alice.auth)
    assert time.monotonic() - started < 10
    assert down.code == 503 and down.headers["Retry-After"] == "5"
    assert json.loads(down.body) == {
        "error": {"code": "unavailable", "message": "MongoDB is unavailable; try again shortly"}
    }
    page = await fetch("/history", headers=alice.auth)  # a page says it in words
    assert page.code == 503 and "MongoDB is unavailable" in page.body.decode()

    own_mongo["server"] = await loop.run_in_executor(
        None, lambda: start_mongo(tmp_path / "mongo", tmp_path / "mongo.log", port=port)
    )
    assert (await fetch("/api/notifications", headers=alice.auth)).code == 200
