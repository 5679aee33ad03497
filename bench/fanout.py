"""Deal-check fan-out: one price makes a deal for N watchers of one item.

Starts its own SecantusDB, redis-server, one web process and 1 (then 2) Celery workers.
For each size N it seeds N users watching one item (the first 1,000 of them online on
JSON sockets), posts a price through the API and times:

- stored: from the POST to the check's job completed (every chunk stored and published);
- last socket: from the POST to the last online socket holding its deal-notification;

with notifications/s and each worker's peak RSS (VmHWM). SecantusDB's raw insert_many of
the same documents, into a collection with the notifications' indexes, is the reference.
It also times the scheduled check with nothing changed, with every watch stored.

    .venv/bin/python bench/fanout.py [--quick] [--sizes 1000,10000,100000] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seed import known_users  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev import embedded  # noqa: E402
from notifier.dev.embedded import free_port, worker_argv  # noqa: E402
from notifier.shopping.checks import DealCheckJobs  # noqa: E402
from notifier.storage.schema import INDEXES, ensure_indexes  # noqa: E402
from notifier.validation import item_key  # noqa: E402

ONLINE = 1000
SEED_BATCH = 5000
WORKER_CONCURRENCY = 4


def seed(db: Any, users: int) -> list[str]:
    """`users` users (no email address: the mail path is measured elsewhere), in id order."""
    ids = [ObjectId() for _ in range(users)]
    for start in range(0, users, SEED_BATCH):
        db.users.insert_many(
            [
                {"_id": i, "username": f"fan-{i}", "password_hash": "!", "role": "shopper"}
                for i in ids[start : start + SEED_BATCH]
            ],
            ordered=False,
        )
    return [str(i) for i in ids]


def watch_all(db: Any, user_ids: list[str], item: str) -> None:
    now = datetime.now(UTC)
    for start in range(0, len(user_ids), SEED_BATCH):
        db.watchlists.insert_many(
            [
                {
                    "user_id": u,
                    "item_key": item_key(item),
                    "item_name": item,
                    "target_price_in_cents": None,
                    "created_at": now,
                }
                for u in user_ids[start : start + SEED_BATCH]
            ],
            ordered=False,
        )


def raw_insert_rate(db: Any, n: int) -> float:
    """Notification-sized documents/s through insert_many(1,000) with the same indexes."""
    scratch = db[f"raw_{ObjectId()}"]
    for collection, keys, options in INDEXES:
        if collection == "notifications":
            scratch.create_index(keys, **options)
    now = datetime.now(UTC)
    docs = [
        {
            "user_id": str(ObjectId()),
            "seq": 1,
            "type": "deal-notification",
            "created_at": now,
            "read": False,
            "data": {
                "deals": [
                    {
                        "item_name": "Fan-out milk",
                        "best_price_in_cents": 199,
                        "regular_price_in_cents": 399,
                        "store_name": "Fan Mart",
                        "store_id": "fan-mart",
                    }
                ],
                "user_id": "x" * 24,
                "message": "You have 1 new deal(s) on your watched items!",
                "notification_id": "000000000001",
            },
            "email_pending": True,
            "deal_keys": [f"k|{i}"],
            "dedupe_key": f"d{i}",
        }
        for i in range(n)
    ]
    started = time.perf_counter()
    for start in range(0, n, 1000):
        scratch.insert_many(docs[start : start + 1000], ordered=False)
    rate = n / (time.perf_counter() - started)
    scratch.drop()
    return rate


def start(env: dict[str, str], log: Path, workers: int) -> list[subprocess.Popen[bytes]]:
    """One web process and `workers` Celery workers; returns when all answer."""
    from celery import Celery

    out = log.open("ab")
    procs = [
        subprocess.Popen([sys.executable, "-m", "web"], cwd=ROOT, env=env, stdout=out, stderr=out)
    ]
    for n in range(workers):
        procs.append(
            subprocess.Popen(
                worker_argv(
                    concurrency=WORKER_CONCURRENCY,
                    # BENCH_WORKER_LOGLEVEL=INFO logs when each chunk was received and done.
                    loglevel=os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
                    name=f"fanout{n}-{os.getpid()}@%h",
                ),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
            )
        )
    control = Celery(broker=env["REDIS_URL"], set_as_current=False)
    deadline = time.monotonic() + 60
    while len(control.control.ping(timeout=1.0)) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers did not answer; see {log}")
    control.close()
    while b"listening on port" not in log.read_bytes():
        if time.monotonic() > deadline:
            raise SystemExit(f"the web process did not start; see {log}")
        time.sleep(0.1)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()  # all at once, then each waited for
    for proc in procs:
        embedded.stop(proc, 20)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def post_price(port: int, admin: str, item: str, price: int) -> None:
    """The admin (a token) posts `item` at `price` cents, regular $10.00, at Fan Mart."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    body = {
        "store_name": "Fan Mart",
        "item_name": item,
        "price_in_cents": price,
        "regular_price_in_cents": 1000,
    }
    await AsyncHTTPClient().fetch(
        HTTPRequest(
            f"http://127.0.0.1:{port}/api/prices",
            "POST",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {admin}"},
        )
    )


async def one_check(
    port: int, env: dict[str, str], online: list[str], item: str, price: int, watchers: int
) -> dict[str, float]:
    """Post one price; time the check's completion and the last online socket's message."""
    from tornado.websocket import websocket_connect

    secret = env["JWT_SECRET"]
    admin_id = str(ObjectId())
    known_users(env["REDIS_URL"], [*online, admin_id])  # users with no password: see seed.py
    sockets = []
    for user in online:
        token = issue_token(secret, user, "fan", "shopper", 3600)
        sock = await websocket_connect(f"ws://127.0.0.1:{port}/ws?format=json&token={token}")
        await sock.read_message()  # connection-established
        sockets.append(sock)
    admin = issue_token(secret, admin_id, "fan-admin", "admin", 3600)
    import redis.asyncio as aioredis

    from notifier.realtime import bus
    from notifier.realtime.events import NotificationEvent

    listener = aioredis.Redis.from_url(env["REDIS_URL"])
    pubsub = listener.pubsub()
    await pubsub.psubscribe("notifier:u:*")  # every user channel (bus.user_channel)
    await pubsub.get_message(timeout=5)  # the subscription's confirmation
    started = time.perf_counter()
    await post_price(port, admin, item, price)

    async def receive(sock: Any) -> float:
        while True:
            message = await sock.read_message()
            if message is None:
                raise SystemExit("a socket closed during the fan-out")
            if json.loads(message)["type"] == "deal-notification":
                return time.perf_counter() - started

    async def published() -> float:
        """Every watcher's notification on the bus (each was stored before it was published)."""
        seen = 0
        while seen < watchers:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60)
            if message is None:
                raise SystemExit(f"only {seen} of {watchers} notifications were published")
            event = bus.decode(message["data"])
            if isinstance(event, NotificationEvent) and event.type == "deal-notification":
                seen += 1
        return time.perf_counter() - started

    stored, *receipts = await asyncio.gather(published(), *(receive(s) for s in sockets))
    for sock in sockets:
        sock.close()
    await pubsub.aclose()
    await listener.aclose()
    return {"stored_s": stored, "last_socket_s": max(receipts)}


def run(quick: bool = False, sizes: list[int] | None = None) -> dict[str, Any]:
    """Every size with 1 and 2 workers; returns the figures (and prints them)."""
    sizes = sizes or ([200, 2000] if quick else [1000, 10_000, 100_000])
    online_n = min(ONLINE, sizes[0])
    port = free_port()
    tmp, env, servers = start_servers(
        "fanout",
        PORT=str(port),
        DEAL_CHECK_INTERVAL="3600",  # only the checks this script causes
        WS_PING_INTERVAL="0",
    )
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    db = client.get_default_database()
    ensure_indexes(db)
    results: dict[str, Any] = {"sizes": sizes, "online": online_n, "runs": []}
    try:
        users = seed(db, max(sizes))
        online = users[:online_n]
        items = {n: f"Fan-out item {n}" for n in sizes}
        for n in sizes:
            watch_all(db, users[:n], items[n])
        results["raw_insert_per_s"] = raw_insert_rate(db, min(10_000, max(sizes)))
        print(f"raw insert_many: {results['raw_insert_per_s']:.0f} docs/s", flush=True)
        jobs = DealCheckJobs(db)
        jobs.changes_to_check()
        db.item_changes.delete_many({})
        samples = []
        for _ in range(20):
            t0 = time.perf_counter()
            jobs.changes_to_check()
            samples.append((time.perf_counter() - t0) * 1000)
        results["nothing_changed_ms"] = statistics.median(samples)
        results["watches_stored"] = db.watchlists.count_documents({})
        print(
            f"scheduled check, nothing changed, {results['watches_stored']:,} watches: "
            f"{results['nothing_changed_ms']:.1f} ms",
            flush=True,
        )
        price = 900
        for workers in (1, 2):
            procs = start(env, tmp / f"stack-{workers}.log", workers)
            try:
                for n in sizes:
                    price -= 1  # a new best price: a new deal for every watcher
                    figures = asyncio.run(one_check(port, env, online, items[n], price, n))
                    run = {
                        "workers": workers,
                        "watchers": n,
                        **figures,
                        "per_s": n / figures["stored_s"],
                        "worker_peak_rss_mb": max(peak_rss_mb(p.pid) for p in procs[1:]),
                    }
                    results["runs"].append(run)
                    print(
                        f"{workers} worker(s), {n:>7,} watchers: stored+published "
                        f"{run['stored_s']:.1f} s ({run['per_s']:.0f}/s), last socket "
                        f"{run['last_socket_s']:.1f} s, worker peak RSS "
                        f"{run['worker_peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
            finally:
                stop(procs)
    finally:
        client.close()
        stop_servers(servers)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help="comma-separated watcher counts")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    results = run(args.quick, sizes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
