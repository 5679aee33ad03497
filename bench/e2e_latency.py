"""End-to-end latency: POST /api/prices -> worker deal check -> MongoDB -> Redis -> socket.

Starts its own SecantusDB, redis-server, Celery worker and web process (as `make run`
does), posts ROUNDS prices one at a time and times each until the deal-notification
envelope arrives on the shopper's socket.

    .venv/bin/python bench/e2e_latency.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from servers import start_databases
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.accounts.users import create_user  # noqa: E402
from notifier.dev.embedded import free_port, worker_argv  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402
from notifier.storage.writes import apply  # noqa: E402


async def measure(port: int, secret: str, users: dict[str, str], rounds: int) -> list[float]:
    shopper = issue_token(secret, users["shopper"], "shopper", "shopper", 3600)
    admin = issue_token(secret, users["admin"], "admin", "admin", 3600)
    http = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}"

    async def call(path: str, body: dict[str, Any], token: str) -> None:
        request = HTTPRequest(
            base + path, "POST", body=json.dumps(body), headers={"Authorization": f"Bearer {token}"}
        )
        await http.fetch(request)

    sock = await websocket_connect(f"ws://127.0.0.1:{port}/ws?format=json&token={shopper}")
    await sock.read_message()  # connection-established
    item = f"Bench item {uuid.uuid4().hex[:6]}"
    await call("/api/watchlist", {"item_name": item}, shopper)
    samples = []
    for i in range(rounds):
        price = {
            "store_name": "Bench Mart",
            "item_name": item,
            "price_in_cents": 1000 - i,
            "regular_price_in_cents": 2000,
        }
        started = time.perf_counter()
        await call("/api/prices", price, admin)
        while True:
            msg = json.loads(await sock.read_message())
            if msg["type"] == "deal-notification":
                break
        samples.append((time.perf_counter() - started) * 1000)
    sock.close()
    return samples


def start_web_and_worker(
    env: dict[str, str], log_path: Path, pin: bool = False
) -> list[subprocess.Popen[bytes]]:
    """`python -m web` and a Celery worker; returns when both answer.

    With `pin`, the web process runs on core 0 and the worker on core 1.
    """
    from celery import Celery

    web_cpu, worker_cpu = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if pin else ([], [])
    with log_path.open("wb") as log:
        procs = [
            subprocess.Popen(
                [*web_cpu, sys.executable, "-m", "web"], cwd=ROOT, env=env, stdout=log, stderr=log
            ),
            subprocess.Popen(
                [*worker_cpu, *worker_argv(loglevel="WARNING")],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            ),
        ]
    control = Celery(broker=env["REDIS_URL"], set_as_current=False)
    while not control.control.ping(timeout=1.0):
        pass
    control.close()
    deadline = time.monotonic() + 30
    while b"listening on port" not in log_path.read_bytes():
        if time.monotonic() > deadline:
            stop(procs)
            raise SystemExit(f"the web process did not start; see {log_path}")
        time.sleep(0.1)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each, then wait for all."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def shopper_and_admin(db: Any) -> dict[str, str]:
    """Store a shopper and an admin (password "x"); username -> user id."""
    ensure_indexes(db)
    apply(db, [create_user("shopper", "x"), create_user("admin", "x", "admin")])
    return {u["username"]: str(u["_id"]) for u in db.users.find()}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    tmp, env, servers = start_databases("bench")
    port, secret = free_port(), env["JWT_SECRET"]
    env["PORT"] = str(port)
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    users = shopper_and_admin(client.get_default_database())
    procs = start_web_and_worker(env, tmp / "procs.log")
    try:
        samples = asyncio.run(measure(port, secret, users, rounds))
    finally:
        stop(procs)
        client.close()
        for server in servers:
            server.stop()
    q = statistics.quantiles(samples, n=100)
    print(
        f"posted price -> deal-notification on the socket, {rounds} rounds (ms): "
        f"min {min(samples):.1f}  p50 {statistics.median(samples):.1f}  "
        f"p95 {q[94]:.1f}  max {max(samples):.1f}"
    )


if __name__ == "__main__":
    main()
