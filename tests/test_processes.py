"""The real entry points as processes: `python -m web` and the `make run` runner."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClient
from tornado.websocket import websocket_connect

from notifier.dev.embedded import free_port
from tests.conftest import ROOT
from tests.helpers import numbered_notes, read_until, spawn


def test_production_refuses_to_start_without_its_settings(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "MONGODB_URI", "REDIS_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "web"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, "NOTIFIER_ENV": "production", "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "notifier: production needs these environment variables: JWT_SECRET, MONGODB_URI, REDIS_URL"
    )


def test_web_process_closes_sockets_with_1012_on_sigterm_and_never_logs_tokens(env, alice, io_loop):
    port = free_port()
    proc = spawn([sys.executable, "-m", "web"], {**env, "PORT": str(port)})
    seen: list[str] = []
    try:
        read_until(proc, f"listening on port {port}", 30, seen)

        async def scenario() -> tuple[int | None, str | None]:
            url = f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}"
            conn = await websocket_connect(url)
            hello = json.loads(await conn.read_message())
            assert hello["type"] == "connection-established"
            proc.send_signal(signal.SIGTERM)
            while await conn.read_message() is not None:
                pass
            conn.close()
            return conn.close_code, conn.close_reason

        assert io_loop.run_sync(scenario, timeout=20) == (1012, "server restarting")
        started = time.monotonic()
        output = "".join(seen) + proc.communicate(timeout=10)[0].decode(errors="replace")
        assert time.monotonic() - started < 2, "shutdown should take well under a second"
        assert proc.returncode == 0
        assert alice.token not in output
        assert "token=[redacted]" in output
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def descendants(pid: int) -> set[int]:
    """Every live process below pid (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(180)
def test_make_run_starts_everything_stops_everything_and_keeps_its_data(tmp_path: Path) -> None:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET", "PORT")
    }
    port = free_port()
    # A VAR_DIR that does not exist yet, as in a fresh clone.
    env = {**base, "PORT": str(port), "VAR_DIR": str(tmp_path / "var"), "DEMO_FEED_INTERVAL": "1"}
    for run, expected in ((1, "demo data seeded"), (2, "demo data kept from the last run")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "notifier.dev"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        seen: list[str] = []
        try:
            read_until(proc, expected, 90, seen)
            read_until(proc, f"listening on port {port}", 60, seen)
            read_until(proc, "celery@", 60, seen)
            client = HTTPClient()
            try:
                health = client.fetch(f"http://127.0.0.1:{port}/healthz")
            except OSError as e:
                raise AssertionError(f"{e}; output:\n{''.join(seen)[-3000:]}") from None
            finally:
                client.close()
            assert json.loads(health.body)["status"] == "ok"
            if run == 1:
                read_until(proc, "new deal(s) for 1 user(s)", 60, seen)  # the demo feed at work
            family = descendants(proc.pid)
            assert len(family) >= 5  # servers, honcho, web, worker, beat
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
            assert proc.returncode == 0
            assert [pid for pid in family if alive(pid)] == []
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_a_client_reconnecting_after_a_web_restart_holds_everything_in_order(
    env, db, sync_redis, alice, io_loop
):

    from notifier.notifications.store import NotificationWriter
    from notifier.realtime.bus import Publisher
    from notifier.realtime.publishing import NotificationService

    port = free_port()
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    publisher, created = numbered_notes(service, alice.user_id, 300)

    def start_web() -> subprocess.Popen:
        proc = spawn([sys.executable, "-m", "web"], {**env, "PORT": str(port)})
        read_until(proc, f"listening on port {port}", 30, [])
        return proc

    first = start_web()
    second: subprocess.Popen | None = None

    async def scenario() -> list[str]:
        nonlocal second
        url = f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}"
        conn = await websocket_connect(url)
        # Without last_id a socket starts after the newest notification at its greeting.
        assert json.loads(await conn.read_message())["type"] == "connection-established"
        got: list[str] = []
        publisher.start()
        while len(got) < 100:
            msg = json.loads(await conn.read_message())
            if msg["type"] == "system-message":
                got.append(msg["data"]["id"])
        first.send_signal(signal.SIGTERM)
        while (raw := await conn.read_message()) is not None:  # what was already in flight
            msg = json.loads(raw)
            if msg["type"] == "system-message":
                got.append(msg["data"]["id"])
        assert conn.close_code == 1012
        conn.close()
        second = await asyncio.get_running_loop().run_in_executor(None, start_web)
        conn = await websocket_connect(f"{url}&last_id={got[-1]}")
        while len(got) < 300:
            msg = json.loads(await conn.read_message())
            if msg["type"] == "system-message":
                got.append(msg["data"]["id"])
        conn.close()
        return got

    try:
        got = io_loop.run_sync(scenario, timeout=60)
        publisher.join()
        assert got == created
    finally:
        for proc in (first, second):
            if proc is not None:
                if proc.poll() is None:
                    proc.terminate()
                proc.communicate(timeout=10)


def test_two_web_processes_behind_one_redis_each_tab_gets_everything_once(
    env, db, sync_redis, alice, io_loop
):
    from notifier.notifications.store import NotificationWriter
    from notifier.realtime.bus import Publisher
    from notifier.realtime.publishing import NotificationService

    ports = [free_port(), free_port()]
    procs = [spawn([sys.executable, "-m", "web"], {**env, "PORT": str(p)}) for p in ports]
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))

    async def scenario() -> None:
        tabs = []
        for port in ports:
            conn = await websocket_connect(
                f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}"
            )
            assert json.loads(await conn.read_message())["type"] == "connection-established"
            tabs.append(conn)
        created = [
            service.notify(
                alice.user_id, "system-message", {"message": f"#{i}", "severity": "info"}
            )["data"]["notification_id"]
            for i in range(50)
        ]
        for conn in tabs:
            got = []
            while len(got) < 50:
                msg = json.loads(await conn.read_message())
                if msg["type"] == "system-message":  # (a socket opened before the process
                    got.append(msg["data"]["id"])  # subscribed also gets an unread-count)
            assert got == created
        # Marked read through one process: the tab on the other hears it too.
        http = AsyncHTTPClient()
        response = await http.fetch(
            f"http://127.0.0.1:{ports[0]}/api/notifications/read",
            method="POST",
            body=json.dumps({"all": True}),
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert json.loads(response.body) == {"unread_count": 0}
        for conn in tabs:
            while (msg := json.loads(await conn.read_message()))["type"] == "unread-count":
                pass
            assert msg["type"] == "notification-read" and msg["data"]["unread_count"] == 0
            conn.close()

    try:
        for proc, port in zip(procs, ports, strict=True):
            read_until(proc, f"listening on port {port}", 30, [])
        io_loop.run_sync(scenario, timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=10)


@pytest.mark.parametrize("start", ["start_redis", "start_mongo"])
def test_a_server_whose_free_port_was_taken_meanwhile_starts_on_another(
    start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs side by side pick free ports at once: one taken between pick and bind is picked
    again, not a failed fixture."""
    from notifier.dev import embedded

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1]])
        monkeypatch.setattr(embedded, "free_port", lambda: next(picks, None) or free_port())
        server = getattr(embedded, start)(tmp_path / "data", tmp_path / "server.log")
        try:
            assert server.url.rsplit(":", 1)[1] != str(taken.getsockname()[1])
            assert "Address already in use" in (tmp_path / "server.log").read_text()
        finally:
            server.stop()
