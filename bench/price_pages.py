"""Price pages with a long history: 5,000 price changes of one item (issue 23.5).

Seeds one shopper watching six items, one of which had 5,000 price changes over 180 days
at three stores (the others a change a day), then times, with a real web process
(`python -m web`) on its own SecantusDB and redis-server: the item page, the watchlist
fragment (what a live deal used to re-fetch) and the dashboard, against a peer page that
reads no prices (/preferences), median and p90 of 60 sequential requests after 5 warm-up
ones. `--before DIR` runs the same against another checkout first (say main's, from
`git archive main | tar -x -C DIR`), each with its own fresh servers, and prints both.

    .venv/bin/python bench/price_pages.py [--before DIR] [--changes 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import start_servers, stop_servers  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402

# Run in the checkout under test (its own record_price, indexes and migrations).
SEED = r"""
import sys
from datetime import UTC, datetime, timedelta
from pymongo import MongoClient
from notifier.accounts.users import create_user
from notifier.settings import Settings
from notifier.shopping.prices import PriceInput, record_price
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply, apply_bulk

changes = int(sys.argv[1])
settings = Settings.from_env()
db = MongoClient(settings.mongodb_uri).get_default_database()
ensure_indexes(db, settings.price_history_days)
apply(db, [create_user("shopper", "bench-password", "shopper", "shopper@example.test")])
user = str(db.users.find_one({"username": "shopper"})["_id"])
stores = ["Fresh Mart", "Value Foods", "Corner Market"]
items = ["Coffee beans 500g", "Milk 1L", "Bananas", "Bread", "Apples 1kg", "Greek yogurt"]
start = datetime.now(UTC) - timedelta(days=180)
writes = []
for i in range(changes):
    at = start + timedelta(seconds=i * 180 * 86400 / changes)
    writes += record_price(PriceInput(stores[i % 3], items[0], 500 + (i * 37) % 300, 899), at)[1]
for item in items[1:]:
    for day in range(180):
        at = start + timedelta(days=day, hours=9)
        writes += record_price(PriceInput(stores[day % 3], item, 200 + (day * 13) % 90, 329), at)[1]
apply_bulk(db, writes)
apply(db, [watch(user, WatchInput(item)) for item in items])
print(db.price_history.count_documents({}))
"""

PAGES = {
    "item page": ("/items/coffee%20beans%20500g", {}),
    "watchlist fragment": ("/fragments/watchlist", {"HX-Request": "true"}),
    "dashboard": ("/", {}),
    "peer: preferences (no prices)": ("/preferences", {}),
}


def run(source: Path, changes: int, requests: int) -> dict[str, tuple[float, float]]:
    """Fresh servers, the seed and a web process of `source`; (p50, p90) ms per page."""
    tmp, env, servers = start_servers("price-pages")
    port = free_port()
    env = {**env, "PYTHONPATH": str(source), "PORT": str(port), "WS_PING_INTERVAL": "0"}
    web = None
    try:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", SEED, str(changes)],
            cwd=source,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        print(
            f"  seeded {out.stdout.strip()} price changes in {time.perf_counter() - started:.0f} s"
        )
        log = (tmp / "web.log").open("wb")
        web = subprocess.Popen(
            [sys.executable, "-m", "web"], cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        token = wait_for_token(base, web)
        results = {}
        for name, (path, headers) in PAGES.items():
            timings = []
            for i in range(5 + requests):
                request = urllib.request.Request(  # noqa: S310 - our own server
                    base + path, headers={"Authorization": f"Bearer {token}", **headers}
                )
                begun = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    response.read()
                if i >= 5:
                    timings.append((time.perf_counter() - begun) * 1000)
            results[name] = (statistics.median(timings), statistics.quantiles(timings, n=10)[-1])
        return results
    finally:
        if web is not None:
            web.terminate()
            web.wait(15)
        stop_servers(servers)


def wait_for_token(base: str, web: subprocess.Popen[bytes]) -> str:
    """The shopper's token, once the web process answers."""
    body = json.dumps({"username": "shopper", "password": "bench-password"}).encode()
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(  # noqa: S310
                base + "/api/token", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return str(json.loads(response.read())["token"])
        except OSError:
            if web.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    """Measure (before and) after; print a table with each page's ratio to the peer."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="another checkout to measure first")
    parser.add_argument("--changes", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    runs = {}
    if args.before:
        print(f"before: {args.before}")
        runs["before"] = run(args.before.resolve(), args.changes, args.requests)
    print(f"after: {ROOT}")
    runs["after"] = run(ROOT, args.changes, args.requests)
    cpu = os.cpu_count()
    print(f"\n{args.changes} changes of one item; {args.requests} requests a page; {cpu} cores")
    print(f"| page | {' | '.join(f'{r} p50 ms | {r} p90 ms | {r} / peer' for r in runs)} |")
    print("|---|" + "---|---|---|" * len(runs))
    for name in PAGES:
        cells = []
        for results in runs.values():
            p50, p90 = results[name]
            peer = results["peer: preferences (no prices)"][0]
            cells.append(f"{p50:.1f} | {p90:.1f} | {p50 / peer:.2f}")
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
