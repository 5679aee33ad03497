"""Log lines: JSON in production with request and user ids, never a token or a password."""

from __future__ import annotations

import json
import logging
import signal
import sys

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from notifier import logs
from notifier.dev.embedded import free_port
from tests.helpers import read_until, spawn

METRICS_TOKEN = "metrics-" + "m" * 30


def test_formatters_redact_tokens_and_carry_the_ids() -> None:
    record = logging.LogRecord(
        "web",
        logging.INFO,
        __file__,
        1,
        "GET /ws?token=%s Authorization: Bearer abc.def",
        ("eyJ.x.y",),
        None,
    )
    record.request_id, record.user_id = "r-1", "u-1"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "GET /ws?token=[redacted] Authorization: Bearer [redacted]"
    assert line["request_id"] == "r-1" and line["user_id"] == "u-1"
    assert set(line) == {"time", "level", "logger", "message", "request_id", "user_id"}
    text = logs.ReadableFormatter().format(record)
    assert "eyJ" not in text and "abc.def" not in text and "[request r-1]" in text


@pytest.mark.timeout(90)
def test_production_logs_are_json_lines_with_ids_and_no_secrets(env, alice, io_loop):
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "web"],
        {**env, "PORT": str(port), "NOTIFIER_ENV": "production", "METRICS_TOKEN": METRICS_TOKEN},
    )
    seen: list[str] = []
    base = f"http://127.0.0.1:{port}"

    async def requests() -> None:
        http = AsyncHTTPClient()
        me = await http.fetch(base + "/api/me", headers={**alice.auth, "X-Request-Id": "req-42"})
        assert me.headers["X-Request-Id"] == "req-42"
        odd = await http.fetch(base + "/api/me", headers={**alice.auth, "X-Request-Id": "no good"})
        assert len(odd.headers["X-Request-Id"]) == 32 and odd.headers["X-Request-Id"] != "no good"
        login = await http.fetch(
            base + "/api/token",
            method="POST",
            raise_error=False,
            body=json.dumps({"username": alice.username, "password": alice.password}),
        )
        assert login.code == 200
        wrong = await http.fetch(
            base + "/api/token",
            method="POST",
            raise_error=False,
            body=json.dumps({"username": alice.username, "password": "wrong-" + alice.password}),
        )
        assert wrong.code == 401
        assert "X-Request-Id" in wrong.headers  # errors carry it too
        metrics = await http.fetch(
            base + "/metrics",
            raise_error=False,
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        )
        assert metrics.code == 200
        conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}")
        assert json.loads(await conn.read_message())["type"] == "connection-established"
        conn.close()

    try:
        read_until(proc, f"listening on port {port}", 30, seen)
        io_loop.run_sync(requests, timeout=30)
        proc.send_signal(signal.SIGTERM)
        seen.append(proc.communicate(timeout=15)[0].decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    output = "".join(seen)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    tagged = [line for line in lines if line.get("request_id") == "req-42"]
    assert tagged and tagged[0]["logger"] == "tornado.access"
    assert tagged[0]["user_id"] == alice.user_id
    assert any("/ws?format=json&token=[redacted]" in line["message"] for line in lines)
    for secret in (alice.token, alice.password, METRICS_TOKEN):
        assert secret not in output


def test_socket_upgrades_are_logged_one_by_one_until_a_storm_then_counted() -> None:
    from web.logs import Sample

    now = [100.0]
    sample = Sample(3, clock=lambda: now[0])
    assert [sample.take() for _ in range(5)] == [True, True, True, False, False]
    assert sample.skipped == 2
    now[0] = 101.2  # the next second: lines again
    assert [sample.take() for _ in range(4)] == [True, True, True, False]
    assert sample.skipped == 3
