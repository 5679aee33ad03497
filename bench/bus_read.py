"""The bus reader's cost per wakeup: bus.listen on a real Redis, a message at a time.

A thread publishes N small events one by one (a round trip each, so the reader mostly
wakes for one message); the event loop's thread CPU time is read from the first message
to the last. Prints µs of loop CPU per message and messages per socket read.

    .venv/bin/python bench/bus_read.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aioredis

from notifier.dev.embedded import start_redis
from notifier.realtime import bus


def payload() -> Any:
    """One small event as this checkout's writers encode it."""
    try:
        from notifier.realtime import events
    except ImportError:
        return bus.encode({"kind": "logout", "user_id": "nobody"})
    return events.encode(events.LogoutEvent(user_id="nobody"))


async def run(url: str, n: int) -> None:
    client = aioredis.Redis.from_url(url)
    got = 0
    done = asyncio.Event()
    subscribed = asyncio.Event()
    cpu0 = 0.0

    def handle(event: Any) -> None:
        nonlocal got, cpu0
        got += 1
        if got == 1:
            cpu0 = time.thread_time()
        if got == n:
            done.set()

    async def on_subscribed() -> None:
        subscribed.set()

    task = asyncio.create_task(bus.listen(client, handle, on_subscribed))
    await subscribed.wait()
    raw = payload()

    def publish() -> None:
        sync = redis.Redis.from_url(url)
        for _ in range(n):
            sync.publish(bus.BROADCAST, raw)
        sync.close()

    publisher = threading.Thread(target=publish)
    started = time.monotonic()
    publisher.start()
    await done.wait()
    cpu = time.thread_time() - cpu0
    wall = time.monotonic() - started
    publisher.join()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.aclose()
    print(f"{n} messages in {wall:.2f}s: {cpu * 1e6 / n:.1f} us of loop CPU per message")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    tmp = Path(tempfile.mkdtemp(prefix="notifier-busread-"))
    server = start_redis(tmp / "redis", tmp / "redis.log")
    try:
        asyncio.run(run(server.url + "/0", n))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
