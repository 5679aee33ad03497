"""Deal stored -> push service: how long Web Push takes, with PUSH_ACK_WAIT as configured.

Starts its own SecantusDB, redis-server, Celery worker and web process (as `make run`
does), and a push service stand-in on loopback (tests/pushing.py). A shopper with no
socket subscribes one browser; ROUNDS prices on ROUNDS items are posted a second apart,
and each deal is timed from its notification's `created_at` (the worker's write) to the
stand-in receiving its push. Nothing acknowledges them, so each waits PUSH_ACK_WAIT.
The peer, in the same run: the live path, timed from the same write to the envelope on
a JSON socket the shopper holds open but never acknowledges on (a background tab).

    .venv/bin/python bench/push_latency.py [ROUNDS] [--push-ack-wait SECONDS]

Without --push-ack-wait, PUSH_ACK_WAIT is left unset: the default (10 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from e2e_latency import shopper_and_admin, start_web_and_worker, stop
from pymongo import MongoClient
from servers import start_databases
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402
from notifier.notifications.state import utc  # noqa: E402
from notifier.settings import Settings  # noqa: E402
from tests.pushing import PushServiceStandIn, Subscriber, open_push  # noqa: E402


def call(base: str, token: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - our own server on loopback
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).close()  # noqa: S310


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rounds", nargs="?", type=int, default=10)
    parser.add_argument("--push-ack-wait", type=float, default=None)
    args = parser.parse_args()
    tmp, env, servers = start_databases("bench-push")
    port, secret = free_port(), env["JWT_SECRET"]
    env["PORT"] = str(port)
    env.pop("PUSH_ACK_WAIT", None)
    if args.push_ack_wait is not None:
        env["PUSH_ACK_WAIT"] = f"{args.push_ack_wait:g}"
    wait = Settings.from_env(env).push_ack_wait
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    db = client.get_default_database()
    users = shopper_and_admin(db)
    shopper = issue_token(secret, users["shopper"], "shopper", "shopper", 3600)
    admin = issue_token(secret, users["admin"], "admin", "admin", 3600)
    standin = PushServiceStandIn()
    standin.start()
    procs = start_web_and_worker(env, tmp / "procs.log")
    base = f"http://127.0.0.1:{port}"
    live: dict[str, float] = {}  # notification id -> when its envelope arrived
    try:
        sock = connect(f"ws://127.0.0.1:{port}/ws?format=json&token={shopper}")

        def read() -> None:
            for raw in sock:
                message = json.loads(raw)
                if message["type"] == "deal-notification":
                    live[message["data"]["id"]] = time.time()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        browser = Subscriber(standin.url("bench"))
        call(base, shopper, "/api/push-subscriptions", browser.json())
        items = [f"Bench item {uuid.uuid4().hex[:6]}" for _ in range(args.rounds)]
        for item in items:
            call(base, shopper, "/api/watchlist", {"item_name": item})
        for item in items:  # a second apart: each deal is its own decision round
            price = {"store_name": "Bench Mart", "item_name": item}
            call(
                base,
                admin,
                "/api/prices",
                price | {"price_in_cents": 100, "regular_price_in_cents": 200},
            )
            time.sleep(1.0)
        received = standin.wait_for("bench", args.rounds, timeout=wait + args.rounds + 60)
        stored = {
            n["data"]["notification_id"]: utc(n["created_at"])
            for n in db.notifications.find({"user_id": users["shopper"]})
        }
        samples, sockets = [], []
        for push in received:
            ident = open_push(push, browser)["id"]
            stored_at = stored[ident]
            assert stored_at is not None
            samples.append(push.at - stored_at.timestamp())
            sockets.append(live[ident] - stored_at.timestamp())
        sock.close()
        reader.join(10)
    finally:
        stop(procs)
        standin.stop()
        client.close()
        for server in servers:
            server.stop()
    beyond = statistics.median(samples) - wait
    socket_p50 = statistics.median(sockets)
    print(
        f"PUSH_ACK_WAIT={wait:g} s: deal stored -> push service, {len(samples)} pushes (s): "
        f"min {min(samples):.3f}  p50 {statistics.median(samples):.3f}  max {max(samples):.3f}\n"
        f"  beyond the wait: p50 {beyond * 1000:.0f} ms, max {(max(samples) - wait) * 1000:.0f} ms; "
        f"peer, deal stored -> envelope on a socket: p50 {socket_p50 * 1000:.0f} ms, "
        f"max {max(sockets) * 1000:.0f} ms; ratio (push beyond the wait / socket) "
        f"{beyond / socket_p50:.2f}"
    )


if __name__ == "__main__":
    main()
