"""/healthz and /readyz of a real web process whose own Redis is stopped and started again."""

from __future__ import annotations

import json
import sys

import pytest
from tornado.httpclient import HTTPClient

from notifier.dev.embedded import free_port, start_redis
from tests.helpers import read_until, spawn, wait_subscribed


def probe(client: HTTPClient, url: str, status: int) -> dict:
    """`url`'s answer, which must have `status`."""
    response = client.fetch(url, raise_error=False)
    assert response.code == status, f"{url}: {response.code} {response.body!r}"
    return json.loads(response.body)


@pytest.mark.gen_test
async def test_readyz_reports_ok_when_everything_answers(fetch):
    response = await fetch("/readyz")
    assert response.code == 200
    assert json.loads(response.body) == {
        "status": "ok",
        "down": [],
        "checks": {"mongo": "ok", "redis": "ok", "subscriber": "ok"},
    }
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.timeout(120)
def test_readyz_names_redis_while_it_is_down_and_recovers(env, tmp_path):
    redis_port, port = free_port(), free_port()
    redis = start_redis(tmp_path / "redis", tmp_path / "redis.log", port=redis_port)
    proc = spawn(
        [sys.executable, "-m", "web"], {**env, "PORT": str(port), "REDIS_URL": f"{redis.url}/0"}
    )
    client = HTTPClient()
    base = f"http://127.0.0.1:{port}"
    try:
        seen: list[str] = []
        read_until(proc, f"listening on port {port}", 30, seen)
        wait_subscribed(proc, seen)
        assert probe(client, base + "/readyz", 200)["down"] == []
        assert client.fetch(base + "/healthz").code == 200  # alive

        redis.stop()  # returns once the server is gone: the next probe finds it down
        report = probe(client, base + "/readyz", 503)
        assert report["status"] == "unavailable"
        assert "redis" in report["down"] and "mongo" not in report["down"]
        health = client.fetch(base + "/healthz", raise_error=False)
        assert health.code == 503 and json.loads(health.body)["redis"].startswith("down")

        redis = start_redis(tmp_path / "redis", tmp_path / "redis.log", port=redis_port)
        wait_subscribed(proc, seen)
        report = probe(client, base + "/readyz", 200)
        assert report == {
            "status": "ok",
            "down": [],
            "checks": {"mongo": "ok", "redis": "ok", "subscriber": "ok"},
        }
    finally:
        client.close()
        proc.terminate()
        proc.communicate(timeout=15)
        redis.stop()
