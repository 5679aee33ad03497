"""The history's filters at 20,000 or 100,000 stored notifications of one user.

Seeds one user with COUNT notifications (half deals over six items and four stores, a
quarter announcements, a quarter job results; a third unread; one an hour apart), then
times NotificationRepository.page (what GET /api/notifications and /history run) for
each filter, at the top and half way down (`before=`), median of 11 runs after one
warm-up. The filters include every combination of issue 23's red-team list (#2:
`q=b zzzz`, `item=…&unread=1`, `q=m&type=jobs`), which read every match of their first
filter before the candidate budget. Runs against the embedded SecantusDB kept in
var/bench/history-<N>k (or MONGODB_URI): seeding takes a few minutes once; later runs
reuse it and take under a minute.

    .venv/bin/python bench/history_filters.py [--count 20000|100000]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import AsyncMongoClient, MongoClient  # noqa: E402

from notifier.dev.embedded import start_mongo  # noqa: E402
from notifier.notifications.filters import NotificationFilter, search_fields  # noqa: E402
from notifier.notifications.state import recount  # noqa: E402
from notifier.notifications.store import NotificationRepository, format_id  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402

COUNT = int(sys.argv[sys.argv.index("--count") + 1]) if "--count" in sys.argv else 100_000
RUNS = 11
USER = "bench-history-user"
ITEMS = ["Milk 1L", "Bananas", "Coffee beans 500g", "Bread", "Apples 1kg", "Greek yogurt"]
STORES = [
    ("fresh-mart", "Fresh Mart"),
    ("value-foods", "Value Foods"),
    ("green-grocer", "Green Grocer"),
    ("corner-market", "Corner Market"),
]
START = datetime(2026, 1, 1, tzinfo=UTC)


def document(seq: int) -> dict[str, Any]:
    """The seq-th notification, as the writers store it (search keys included)."""
    kind = seq % 4
    created = START + timedelta(hours=seq)
    if kind in (0, 1):
        item = ITEMS[seq % len(ITEMS)]
        store_id, store = STORES[(seq // 7) % len(STORES)]
        deal = {
            "item_name": item,
            "best_price_in_cents": 199,
            "store_name": store,
            "store_id": store_id,
        }
        type_, data = "deal-notification", {"deals": [deal], "message": "1 deal", "headline": item}
    elif kind == 2:
        type_, data = "system-message", {"message": f"Announcement {seq}", "severity": "info"}
    else:
        type_, data = "job-complete", {"job": "price-import", "status": "succeeded", "summary": ""}
    return {
        "user_id": USER,
        "seq": seq,
        "type": type_,
        "created_at": created,
        "read": seq % 3 != 0,
        "data": {**data, "notification_id": format_id(seq)},
        **search_fields(type_, data),
    }


def seed(db: Any) -> None:
    """Store the user's notifications, then the indexes (faster than index as you insert)."""
    batch = []
    for seq in range(1, COUNT + 1):
        batch.append(document(seq))
        if len(batch) == 10_000:
            db.notifications.insert_many(batch, ordered=False)
            batch = []
    ensure_indexes(db)
    recount(db, [USER])


FILTERS = {
    "none": NotificationFilter(),
    "unread": NotificationFilter(unread=True),
    "type=deal-notification": NotificationFilter(type="deal-notification"),
    "type=job-complete": NotificationFilter(type="job-complete"),
    "item=milk 1l": NotificationFilter(item="milk 1l"),
    "store=corner-market": NotificationFilter(store="corner-market"),
    "q=coff": NotificationFilter(q="coff"),
    "since/until (one week)": NotificationFilter(
        since=START + timedelta(hours=COUNT * 3 // 5),
        until=START + timedelta(hours=COUNT * 3 // 5 + 168),
    ),
    "item+store": NotificationFilter(item="bananas", store="value-foods"),
    "q+unread": NotificationFilter(unread=True, q="milk"),
    # The worst case: a combination nothing matches reads every match of its first filter.
    "item+unread (matches nothing)": NotificationFilter(unread=True, item="bananas"),
    # Issue 23 #2's red-team list, and the other pairs a shopper can make on the page.
    "q=b zzzz (matches nothing)": NotificationFilter(q="b zzzz"),
    "item=milk 1l+unread": NotificationFilter(unread=True, item="milk 1l"),
    "q=m+type=job-complete (matches nothing)": NotificationFilter(q="m", type="job-complete"),
    "type=job-complete+unread": NotificationFilter(unread=True, type="job-complete"),
    "store+unread": NotificationFilter(unread=True, store="green-grocer"),
    "q=coff+store": NotificationFilter(q="coff", store="fresh-mart"),
    "item+since/until (one week)": NotificationFilter(
        item="bread",
        since=START + timedelta(hours=COUNT // 2),
        until=START + timedelta(hours=COUNT // 2 + 168),
    ),
}


async def measure(uri: str) -> list[tuple[str, float, float, int]]:
    """(filter, top page ms, half-way page ms, rows on the top page) per filter."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    repo = NotificationRepository(client.get_default_database())
    rows = []
    for name, filters in FILTERS.items():
        timings = []
        for before in (None, COUNT // 2):
            await repo.page(USER, 20, before, filters=filters)  # warm-up
            runs = []
            for _ in range(RUNS):
                started = time.perf_counter()
                page = await repo.page(USER, 20, before, filters=filters)
                runs.append((time.perf_counter() - started) * 1000)
            timings.append(statistics.median(runs))
            if before is None:
                shown = len(page.items)
        rows.append((name, timings[0], timings[1], shown))
    await client.close()
    return rows


def main() -> None:
    """Seed, measure, print a table."""
    uri = os.environ.get("MONGODB_URI")
    server = None
    if not uri:
        var = ROOT / "var" / "bench" / f"history-{COUNT // 1000}k"
        var.mkdir(parents=True, exist_ok=True)
        server = start_mongo(var / "mongo", var / "mongo.log")
        uri = server.url + "/history_bench"
    try:
        sync: MongoClient[dict[str, Any]] = MongoClient(uri)
        db = sync.get_default_database()
        stored = (
            db.notifications.estimated_document_count()  # our own database: only this user
            if server is not None
            else db.notifications.count_documents({"user_id": USER})
        )
        if stored != COUNT:
            if server is not None:
                db.notifications.drop()  # our own database: indexes are built after the data
            else:
                db.notifications.delete_many({"user_id": USER})
            started = time.perf_counter()
            seed(db)
            took = time.perf_counter() - started
            print(f"seeded {COUNT:,} notifications in {took:.1f} s", flush=True)
        ensure_indexes(db)
        print(f"{COUNT:,} notifications, p50 of {RUNS} runs; x: against the unfiltered page")
        print(
            f"| filter | first page (ms) | x | {COUNT // 2:,} deep (ms) | x | rows |\n"
            "|---|---:|---:|---:|---:|---:|"
        )
        rows = asyncio.run(measure(uri))
        peer_top, peer_deep = rows[0][1], rows[0][2]  # "none": the peer in the same run
        for name, top, deep, shown in rows:
            print(
                f"| {name} | {top:.1f} | {top / peer_top:.1f} | {deep:.1f} | "
                f"{deep / peer_deep:.1f} | {shown} |",
                flush=True,
            )
        sync.close()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
