"""notifier's whole stack (no peer equivalent): a posted price to the socket, and history.

1. POST /api/prices -> Celery deal check -> MongoDB -> Redis -> the envelope on the
   socket, timed by bench/e2e_latency.py's `measure`, with the worker on core 1.
2. With 100,000 notifications stored for one user, 66,000 of them unread (bench/seed.py):
   GET /history and GET /api/notifications, the first page and one 50,000 deep
   (`before=`), and the dashboard with its unread badge; p50/p95 over up to 50 requests.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import loadgen
from e2e_latency import measure, start_web_and_worker, stop
from pymongo import MongoClient
from seed import store_notifications

from notifier.accounts.auth import issue_token
from notifier.accounts.users import create_user
from notifier.dev.embedded import free_port
from notifier.notifications.store import format_id
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 30
HISTORY = 100_000
UNREAD = 66_000
SAMPLES = 50  # requests per page measured, unless SAMPLE_SECONDS runs out first
MIN_SAMPLES = 3
SAMPLE_SECONDS = 6.0  # per page: a slow page still leaves the suite in its time budget


async def time_history(port: int, token: str, stored: int, samples: int) -> dict[str, Any]:
    """p50/p95 of the history page, the JSON API and the dashboard (the unread badge)."""
    deep = f"before={format_id(stored // 2)}"
    pages = (
        ("history_first", "/history", b"Old notification"),
        ("history_deep", f"/history?{deep}", b"Old notification"),
        ("api_first", "/api/notifications", b'"unread_count"'),
        ("api_deep", f"/api/notifications?{deep}", b'"unread_count"'),
        ("dashboard_badge", "/", b"unread-badge"),
    )
    out: dict[str, Any] = {}
    for name, path, needle in pages:
        times: list[float] = []
        deadline = time.monotonic() + SAMPLE_SECONDS
        while len(times) < samples and (len(times) < MIN_SAMPLES or time.monotonic() < deadline):
            ms, body = await loadgen.timed_get(port, path, token)
            times.append(ms)
            assert needle in body, (name, body[:200])
        ordered = sorted(times)
        out[name] = {
            "samples": len(times),
            "ms_p50": statistics.median(times),
            "ms_p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "ms_max": ordered[-1],
        }
        print(f"  {path}: p50 {out[name]['ms_p50']:.1f} ms over {len(times)}", flush=True)
    return out


def run(env: dict[str, str], tmp: Path, quick: bool = False) -> dict[str, Any]:
    """Both measurements against a fresh web process and a Celery worker."""
    stored, unread = (2_000, 1_320) if quick else (HISTORY, UNREAD)
    rounds, samples = (5, 5) if quick else (ROUNDS, SAMPLES)
    print(f"whole stack: posted price -> socket, and history with {stored:,} stored", flush=True)
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
    store_notifications(db, users["historian"], stored, unread)
    stored_s = time.monotonic() - started
    procs = start_web_and_worker(env, tmp / "stack.log", pin=True)
    try:
        latencies = asyncio.run(measure(port, env["JWT_SECRET"], users, rounds))
        token = issue_token(env["JWT_SECRET"], users["historian"], "historian", "shopper", 3600)
        history = asyncio.run(time_history(port, token, stored, samples))
    finally:
        stop(procs)
        client.close()
    return {
        "price_to_socket": {
            "rounds": rounds,
            "ms_p50": statistics.median(latencies),
            "ms_p95": sorted(latencies)[int(0.95 * rounds)],
            "ms_max": max(latencies),
        },
        "history": {
            "stored": stored,
            "unread": unread,
            "deep_before": format_id(stored // 2),
            "samples_asked": samples,
            "insert_seconds": stored_s,
            "pages": history,
        },
    }
