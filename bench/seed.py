"""Stored notifications for the bench, written straight into MongoDB in notifier's schema.

Every scenario that needs a history seeds it through `store_notifications`, so when the
schema grows (a per-user state document with the newest seq and the unread count, say)
this is the one place to adapt. `recount` then runs notifier's own repair command when
the CLI has one, so derived figures match what was inserted behind the writers' back.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from notifier.notifications.store import counter_id, format_id

ROOT = Path(__file__).resolve().parent.parent
BATCH = 20_000
RECOUNT_COMMANDS = ("repair-counts", "recount")  # whichever the CLI offers, if any


def store_notifications(
    db: Any, user_id: str, count: int, unread: int, message: str = "Old notification"
) -> None:
    """Store seqs 1..count for a user (system messages), the newest `unread` of them unread.

    Like NotificationWriter: seqs without holes, then the counter advanced to the top.
    """
    now = datetime.now(UTC)
    read_up_to = count - unread  # older ones read, as a person reading top-down leaves them
    docs = []
    for seq in range(1, count + 1):
        docs.append(
            {
                "user_id": user_id,
                "seq": seq,
                "type": "system-message",
                "created_at": now - timedelta(seconds=count - seq),
                "read": seq <= read_up_to,
                "data": {
                    "message": f"{message} {seq}",
                    "severity": "info",
                    "notification_id": format_id(seq),
                },
            }
        )
        if len(docs) == BATCH:
            db.notifications.insert_many(docs, ordered=False)
            docs = []
    if docs:
        db.notifications.insert_many(docs, ordered=False)
    db.counters.update_one({"_id": counter_id(user_id)}, {"$max": {"seq": count}}, upsert=True)


def recount(env: dict[str, str]) -> str | None:
    """Run `python -m notifier <repair command>` when the CLI has one; its name, else None."""
    helptext = subprocess.run(
        [sys.executable, "-m", "notifier", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    for command in RECOUNT_COMMANDS:
        if command in helptext:
            subprocess.run(
                [sys.executable, "-m", "notifier", command], cwd=ROOT, env=env, check=True
            )
            return command
    return None
