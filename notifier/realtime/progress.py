"""Long jobs' progress: pushed live to the requester's tabs and kept where a new tab finds it.

A job (a CSV import, a deal check) reports (done, total) at most a few times a second.
Each report is published as a job-progress event and stored under the user's key in
Redis for as long as the job runs, so a page opened mid-job renders the bar as it
stands; the last report (done == total) removes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from notifier.realtime.bus import Publisher
from notifier.realtime.render import PayloadRenderer

KEY = "notifier:job-progress:{user_id}"
KEEP_SECONDS = 3600  # a job whose worker died stops showing after this long
REPORTS_PER_SECOND = 4


def report(
    client: redis.Redis,
    publisher: Publisher,
    renderer: PayloadRenderer,
    user_id: str,
    progress: dict[str, Any],
) -> None:
    """Store and publish `{"job", "job_id", "done", "total"}` for the user's tabs."""
    key = KEY.format(user_id=user_id)
    if progress["done"] < progress["total"]:
        client.set(key, json.dumps(progress), ex=KEEP_SECONDS)
    else:
        client.delete(key)
    publisher.publish(
        renderer.job_progress_event(
            user_id, progress["job"], progress["job_id"], progress["done"], progress["total"]
        )
    )


async def current(client: aioredis.Redis, user_id: str) -> dict[str, Any] | None:
    """The user's running job's progress, if any (for a page opened mid-job)."""
    raw = await client.get(KEY.format(user_id=user_id))
    if not raw:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value


class Every:
    """True at most `per_second` times a second (and always for the last call)."""

    def __init__(
        self, per_second: float = REPORTS_PER_SECOND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._gap, self._clock, self._last = 1 / per_second, clock, float("-inf")

    def due(self, last: bool = False) -> bool:
        """Whether to report now."""
        now = self._clock()
        if last or now - self._last >= self._gap:
            self._last = now
            return True
        return False
