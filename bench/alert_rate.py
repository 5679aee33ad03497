"""Alerts and emails per demo user per hour while the demo feed runs (issue 20 point 1).

Starts what `make run` starts, minus the web process (nobody is online, so every deal
no page acknowledged is emailed, as for a shopper who left the tab closed): SecantusDB,
redis-server, the demo seed, a Celery worker and beat with the demo feed. Over
`--minutes` (10), after `--warmup` minutes (0), it counts each demo user's deal
notifications (alerts, and the deals they list) and deal emails sent, per hour.

    .venv/bin/python bench/alert_rate.py --minutes 10

`--speed K` runs the feed, the scheduled check and the email waits K times faster
(DEMO_FEED_INTERVAL, DEAL_CHECK_INTERVAL, EMAIL_ACK_WAIT, EMAIL_MIN_INTERVAL divided by K;
a deal's two-minute lifetime is not): the rates are then per hour of feed time. Run it
from a checkout of another commit (a worktree) to measure that commit: the processes run
the code of the folder this file is in.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pymongo import MongoClient  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402

from notifier.dev.seed import seed  # noqa: E402
from notifier.migrations import migrate  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402

DEMO = {"DEMO_FEED_INTERVAL": 8.0, "DEAL_CHECK_INTERVAL": 10.0, "EMAIL_ACK_WAIT": 60.0}
EMAIL_MIN_INTERVAL = 1800.0
USERS = ("alice", "bob")


def start(env: dict[str, str], tmp: Path) -> list[subprocess.Popen[bytes]]:
    """A worker and beat as Procfile.dev runs them."""
    log = (tmp / "processes.log").open("wb")
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    return [
        subprocess.Popen(
            [*celery, "worker", "--loglevel=WARNING", "--pool=threads", "--concurrency=4"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        ),
        subprocess.Popen(
            [*celery, "beat", "--loglevel=WARNING", f"--schedule={tmp / 'beat-schedule'}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        ),
    ]


def count(db: Any, since: datetime, hours: float) -> dict[str, dict[str, float]]:
    """Per demo user: alerts (deal notifications), deals listed, emails sent; per hour."""
    out = {}
    for name in USERS:
        user = db.users.find_one({"username": name})
        uid = str(user["_id"])
        notes = list(
            db.notifications.find(
                {"user_id": uid, "type": "deal-notification", "created_at": {"$gte": since}}
            )
        )
        deals = sum(len(n["data"]["deals"]) for n in notes)
        emails = db.emails.count_documents(
            {"user_id": uid, "kind": "deal", "status": "sent", "created_at": {"$gte": since}}
        )
        out[name] = {
            "alerts": len(notes),
            "deals": deals,
            "emails": emails,
            "alerts_per_hour": round(len(notes) / hours, 1),
            "deals_per_hour": round(deals / hours, 1),
            "emails_per_hour": round(emails / hours, 1),
        }
    return out


def main() -> None:
    """Run the feed, then print the rates as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="minutes the feed runs before counting starts (each item's first deal is news)",
    )
    args = parser.parse_args()
    settings = {k: str(v / args.speed) for k, v in DEMO.items()}
    settings["EMAIL_MIN_INTERVAL"] = str(EMAIL_MIN_INTERVAL / args.speed)
    commit = subprocess.run(  # what the processes run: the folder as it is now
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    tmp, env, servers = start_servers("alert-rate", **settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
        db = client.get_default_database()
        ensure_indexes(db, 180)
        migrate(db)
        seed(db, "demo")
        procs = start(env, tmp)
        time.sleep(args.warmup * 60)
        since = datetime.now(UTC)
        time.sleep(args.minutes * 60)  # the feed runs for this long: the measurement itself
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        hours = args.minutes / 60 * args.speed
        result = {
            "commit": commit,
            "minutes": args.minutes,
            "warmup_minutes": args.warmup,
            "speed": args.speed,
            "feed_hours": round(hours, 3),
            "per_user": count(db, since, hours),
        }
        print(json.dumps(result, indent=2))
        client.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop_servers(servers)


if __name__ == "__main__":
    main()
