"""Scale-out: 2 web processes and 2 Celery workers on one Redis and one MongoDB server.

Shoppers keep tabs on both web processes; an admin posts prices through the API, the
workers find the deals and publish them, and every tab gets each of its user's
notifications exactly once, in order. Checks run in chunks of two users (the suite's
DEAL_CHECK_CHUNK_USERS), so each check is shared between the two workers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from celery import Celery
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from notifier.dev.embedded import free_port, worker_argv
from notifier.notifications.store import format_id
from tests.conftest import start_worker
from tests.helpers import read_until, spawn

USERS = 6
ITEMS = 8


@pytest.mark.timeout(180)
def test_two_web_processes_and_two_workers_deliver_each_notification_once_per_tab(
    env, config, db, worker, make_user, admin, io_loop, tmp_path, var_dir
):
    ports = [free_port(), free_port()]
    webs = [spawn([sys.executable, "-m", "web"], {**env, "PORT": str(p)}) for p in ports]
    second_worker = start_worker(
        worker_argv(name=f"scale-out-{free_port()}@%h"), env, tmp_path / "worker2.log"
    )
    control = Celery(broker=config.redis_url, set_as_current=False)
    users = [make_user(prefix="scale") for _ in range(USERS)]
    run = f"{time.monotonic_ns():x}"
    items = [f"Scale item {run} {i}" for i in range(ITEMS)]
    # User u watches item i when (u + i) % 3 != 0: overlapping, unequal watchlists.
    watches = {
        u.user_id: [it for i, it in enumerate(items) if (n + i) % 3] for n, u in enumerate(users)
    }

    async def api(port, path, body, user):
        request = HTTPRequest(
            f"http://127.0.0.1:{port}{path}",
            method="POST",
            body=json.dumps(body),
            headers=user.auth,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        assert response.code in (201, 202), response.body
        return response

    async def scenario() -> dict[str, int]:
        for n, user in enumerate(users):
            for item in watches[user.user_id]:
                await api(ports[n % 2], "/api/watchlist", {"item_name": item}, user)
        # Two tabs per user, one on each process; the last user has a third tab on web 0.
        tabs = []
        for n, user in enumerate(users):
            places = [ports[0], ports[1]] + ([ports[0]] if n == USERS - 1 else [])
            for port in places:
                conn = await websocket_connect(
                    f"ws://127.0.0.1:{port}/ws?format=json&token={user.token}"
                )
                assert json.loads(await conn.read_message())["type"] == "connection-established"
                tabs.append((user, port, conn))
        started = time.monotonic()
        for i, item in enumerate(items):  # each post queues a deal check for its item
            await api(
                ports[i % 2],
                "/api/prices",
                {
                    "store_name": "Scale Mart",
                    "item_name": item,
                    "price_in_cents": 100,
                    "regular_price_in_cents": 250,
                },
                admin,
            )

        async def receive(user, conn) -> list[str]:
            got: list[str] = []
            while len(got) < len(watches[user.user_id]):
                msg = json.loads(await asyncio.wait_for(conn.read_message(), 60))
                if msg["type"] == "deal-notification":
                    got.append(msg["data"]["id"])
            # Anything still on its way would arrive before the answer to this ping.
            conn.write_message(json.dumps({"type": "ping"}))
            while (msg := json.loads(await conn.read_message()))["type"] != "pong":
                assert msg["type"] != "deal-notification", f"an extra message: {msg}"
            return got

        received = await asyncio.gather(*(receive(user, conn) for user, _, conn in tabs))
        elapsed = time.monotonic() - started
        for (user, port, conn), got in zip(tabs, received, strict=True):
            stored = [
                format_id(d["seq"])
                for d in db.notifications.find(
                    {"user_id": user.user_id, "type": "deal-notification"}
                ).sort("seq", 1)
            ]
            assert len(stored) == len(watches[user.user_id])  # one per item, none twice
            assert got == stored, (user.username, port)  # each once, in order
            conn.close()
        return {
            "tabs": len(tabs),
            "notifications": sum(len(w) for w in watches.values()),
            "deliveries": sum(len(g) for g in received),
            "seconds": round(elapsed, 2),
        }

    try:
        for proc, port in zip(webs, ports, strict=True):
            read_until(proc, f"listening on port {port}", 30, [])
        deadline = time.monotonic() + 60
        while len(control.control.ping(timeout=1.0)) < 2:
            assert second_worker.poll() is None, (tmp_path / "worker2.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second worker never answered"
        figures = io_loop.run_sync(scenario, timeout=150)
        print(f"scale-out: {figures}")
        assert figures["deliveries"] == sum(
            len(watches[u.user_id]) * (3 if n == USERS - 1 else 2) for n, u in enumerate(users)
        )
        # Both workers ran chunks of these checks.
        for log in (tmp_path / "worker2.log", var_dir / "worker.log"):
            assert "tasks.deals.check_deal_chunk" in log.read_text(errors="replace"), log
    finally:
        control.close()
        for proc in (*webs, second_worker):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
