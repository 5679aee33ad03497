"""notifier's whole stack (no peer equivalent): a posted price to the socket, and history.

1. POST /api/prices -> Celery deal check -> MongoDB -> Redis -> the envelope on the
   socket, timed by bench/e2e_latency.py's `measure`, with the worker on core 1.
2. GET /history with 100,000 notifications stored for one user (inserted in bulk with
   the schema notifier/notifications.py writes): the first page and a deep page.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2e_latency import measure, start_web_and_worker, stop
from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from notifier.accounts.auth import issue_token
from notifier.accounts.users import create_user
from notifier.dev.embedded import free_port
from notifier.notifications.state import recount
from notifier.notifications.store import format_id
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 30
HISTORY = 100_000
HISTORY_SAMPLES = 3  # a page takes seconds on SecantusDB with 100,000 stored


def store_history(db: Any, user_id: str) -> None:
    now = datetime.now(UTC)
    docs = []
    for seq in range(1, HISTORY + 1):
        data = {
            "message": f"Old notification {seq}",
            "severity": "info",
            "notification_id": format_id(seq),
        }
        docs.append(
            {
                "user_id": user_id,
                "seq": seq,
                "type": "system-message",
                "created_at": now - timedelta(seconds=HISTORY - seq),
                "read": seq % 3 == 0,
                "data": data,
            }
        )
        if len(docs) == 20000:
            db.notifications.insert_many(docs, ordered=False)
            docs = []
    recount(db, [user_id])  # the state document a writer would have kept


async def time_history(port: int, token: str) -> dict[str, float]:
    http = AsyncHTTPClient()
    out = {}
    for name, query in (("first_page", ""), ("deep_page", f"?before={format_id(HISTORY // 2)}")):
        samples = []
        for _ in range(HISTORY_SAMPLES):
            request = HTTPRequest(
                f"http://127.0.0.1:{port}/history{query}",
                request_timeout=300,
                headers={"Authorization": f"Bearer {token}"},
            )
            started = time.perf_counter()
            response = await http.fetch(request)
            samples.append((time.perf_counter() - started) * 1000)
            assert b"Old notification" in response.body
        out[f"{name}_ms_p50"] = statistics.median(samples)
        out[f"{name}_ms_max"] = max(samples)
    return out


def run(env: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Both measurements against a fresh web process and a Celery worker."""
    print("whole stack: posted price -> socket, and history with 100,000 stored", flush=True)
    port = free_port()
    env = {**env, "PORT": str(port)}
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    db = client.get_default_database()
    ensure_indexes(db)
    apply(
        db,
        [
            create_user("shopper", "x"),
            create_user("admin", "x", "admin"),
            create_user("historian", "x"),
        ],
    )
    users = {u["username"]: str(u["_id"]) for u in db.users.find()}
    started = time.monotonic()
    store_history(db, users["historian"])
    stored_s = time.monotonic() - started
    procs = start_web_and_worker(env, tmp / "stack.log", pin=True)
    try:
        samples = asyncio.run(measure(port, env["JWT_SECRET"], users, ROUNDS))
        token = issue_token(env["JWT_SECRET"], users["historian"], "historian", "shopper", 3600)
        history = asyncio.run(time_history(port, token))
    finally:
        stop(procs)
        client.close()
    return {
        "price_to_socket": {
            "rounds": ROUNDS,
            "ms_p50": statistics.median(samples),
            "ms_p95": sorted(samples)[int(0.95 * ROUNDS)],
            "ms_max": max(samples),
        },
        "history": {"stored": HISTORY, "insert_seconds": stored_s, **history},
    }
