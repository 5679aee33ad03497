"""Stored notifications for the bench, written straight into MongoDB in notifier's schema.

Every scenario that needs a history seeds it through `store_notifications`, the one
place that knows the schema: the notifications, then the user's state document (newest
seq, unread count) rebuilt by notifier's own recount, as `repair-counts` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from notifier.notifications.state import recount
from notifier.notifications.store import format_id

ROOT = Path(__file__).resolve().parent.parent
BATCH = 20_000


def store_notifications(
    db: Any, user_id: str, count: int, unread: int, message: str = "Old notification"
) -> None:
    """Store seqs 1..count for a user (system messages), the newest `unread` of them unread.

    Like NotificationWriter: seqs without holes, then the state document in step.
    """
    store_histories(db, [user_id], count, unread, message)


def store_histories(
    db: Any, user_ids: list[str], count: int, unread: int, message: str = "Old notification"
) -> None:
    """store_notifications for each of many users, in a few large inserts and one recount."""
    now = datetime.now(UTC)
    read_up_to = count - unread  # older ones read, as a person reading top-down leaves them
    docs = []
    for user_id in user_ids:
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
    recount(db, user_ids)


def known_users(redis_url: str, user_ids: list[str], version: int = 0) -> None:
    """Let the bench's made-up users' tokens through revocation (issue 15).

    Every request and handshake checks its token's version against the user's current
    one, cached in Redis (notifier/accounts/revocation.py); a user with no document is
    gone and refused. The bench's users have no documents, so their versions are cached
    here: each handshake still pays its one Redis GET, as a real user's does.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.set(f"notifier:token-version:{user_id}", version, ex=4 * 3600)
            pipe.execute()
    finally:
        client.close()
