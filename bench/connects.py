"""Connects per second to /ws for a user with a long unread history, and the history page.

Starts its own SecantusDB and redis-server, stores HISTORY unread notifications for one
user (in bulk, with the schema the writers use, and the state document and the old
`counters` document they would have kept), starts `python -m web` from --code (this tree
by default; point it at an export of an older commit to compare), then:

1. opens --sequential sockets one after another (connect, read the greeting, close);
2. opens --concurrent sockets at once and waits for every greeting;
(the sockets are opened as --users users in turn: one user may make 40 handshakes at once)
3. times GET /history (the first page) a few times.

    .venv/bin/python bench/connects.py [--history 66000] [--sequential 200]
        [--concurrent 500] [--users 20] [--code DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from websockets.asyncio import client as ws_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seed import known_users, store_notifications  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.accounts.users import create_user  # noqa: E402
from notifier.dev.embedded import free_port, start_mongo, start_redis  # noqa: E402
from notifier.notifications.store import format_id  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402
from notifier.storage.writes import apply  # noqa: E402

PAGE_SAMPLES = 5


async def connect_once(url: str) -> None:
    async with ws_client.connect(url) as sock:
        await sock.recv()  # connection-established


async def sequential(urls: list[str], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await connect_once(urls[i % len(urls)])
    return n / (time.perf_counter() - started)


async def concurrent(urls: list[str], n: int) -> float:
    started = time.perf_counter()
    socks = await asyncio.gather(
        *(ws_client.connect(urls[i % len(urls)], open_timeout=120) for i in range(n))
    )
    await asyncio.gather(*(s.recv() for s in socks))
    rate = n / (time.perf_counter() - started)
    await asyncio.gather(*(s.close() for s in socks))
    return rate


async def first_page_ms(port: int, token: str) -> float:
    http = AsyncHTTPClient()
    samples = []
    for _ in range(PAGE_SAMPLES):
        request = HTTPRequest(
            f"http://127.0.0.1:{port}/history",
            request_timeout=300,
            headers={"Authorization": f"Bearer {token}"},
        )
        started = time.perf_counter()
        response = await http.fetch(request)
        samples.append((time.perf_counter() - started) * 1000)
        assert format_id(1) not in response.body.decode()  # the newest page, not the oldest
    return statistics.median(samples)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--history", type=int, default=66_000)
    args.add_argument("--sequential", type=int, default=200)
    args.add_argument("--concurrent", type=int, default=500)
    # Each user may make 40 handshakes at once (notifier/realtime/socket_limit.py): the
    # concurrent round opens its sockets as this many users, each with the same history.
    args.add_argument("--users", type=int, default=20)
    args.add_argument("--format", choices=("json", "html"), default="json")
    args.add_argument("--code", type=Path, default=ROOT, help="the tree `python -m web` runs")
    opts = args.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="notifier-connects-"))
    mongo = start_mongo(tmp / "mongo", tmp / "mongo.log")
    redis = start_redis(tmp / "redis", tmp / "redis.log")
    port, secret = free_port(), "bench-" + uuid.uuid4().hex * 2
    env = {
        **os.environ,
        "MONGODB_URI": mongo.url + "/bench",
        "REDIS_URL": redis.url + "/0",
        "JWT_SECRET": secret,
        "PORT": str(port),
        "VAR_DIR": str(tmp),
        "CONNECTIONS_PER_USER": str(opts.concurrent + 10),  # measure connects, not evictions
        "CONNECTIONS_PER_ADDRESS": str(opts.concurrent + opts.sequential + 10),  # one client host
    }
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    web = None
    try:
        db = client.get_default_database()
        ensure_indexes(db)
        names = [f"historian{n}" for n in range(opts.users)]
        apply(db, [create_user(name, "x") for name in names])
        user_ids = [str(u["_id"]) for u in db.users.find({"username": {"$in": names}})]
        started = time.monotonic()
        for user_id in user_ids:
            store_notifications(db, user_id, opts.history, unread=opts.history)
        stored_s = time.monotonic() - started
        log = tmp / "web.log"
        with log.open("wb") as out:
            web = subprocess.Popen(
                [sys.executable, "-m", "web"], cwd=opts.code, env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 60
        while b"listening on port" not in log.read_bytes():
            if web.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the web process did not start; see {log}")
            time.sleep(0.05)
        known_users(env["REDIS_URL"], user_ids)
        tokens = [issue_token(secret, u, "historian", "shopper", 3600) for u in user_ids]
        urls = [f"ws://127.0.0.1:{port}/ws?format={opts.format}&token={t}" for t in tokens]
        seq_rate = asyncio.run(sequential(urls, opts.sequential))
        conc_rate = asyncio.run(concurrent(urls, opts.concurrent))
        token = tokens[0]
        page_ms = asyncio.run(first_page_ms(port, token))
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        client.close()
        redis.stop()
        mongo.stop()
    print(
        f"code {opts.code}: {opts.users} users with {opts.history} unread stored each"
        f" ({stored_s:.1f}s to insert)\n"
        f"  {opts.sequential} sequential connects: {seq_rate:.1f}/s\n"
        f"  {opts.concurrent} concurrent connects: {conc_rate:.1f}/s\n"
        f"  /history first page: {page_ms:.1f} ms (median of {PAGE_SAMPLES})"
    )


if __name__ == "__main__":
    main()
