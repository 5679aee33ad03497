"""Web CPU per delivered message: one web process, N sockets, pre-made events at a fixed rate.

Starts Redis, MongoDB and `python -m web` (on core 0, as bench/suite.py does), opens
USERS sockets of one format (one per user), publishes targeted notification events made
before the clock starts, and reads the web process's CPU time (/proc utime+stime) from
the first publish until the last message arrived. Prints µs of web CPU per message.

    .venv/bin/python bench/web_cpu.py [RATE] [SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import suite  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402
from suite import CREATED, start_server, tokens  # noqa: E402

from notifier.notifications.store import format_id  # noqa: E402

USERS = 200


def notification(user: str, seq: int) -> dict[str, Any]:
    """A stored notification as the bus carries it."""
    return {
        "id": format_id(seq),
        "type": "system-message",
        "created_at": CREATED,
        "read": False,
        "data": {"message": f"bench {user} {seq} " + "y" * 200, "severity": "info"},
    }


def make_events(users: list[str], total: int) -> list[bytes]:
    """The events, as the writers of this checkout publish them."""
    seqs = dict.fromkeys(users, 0)
    out = []
    try:
        from notifier.realtime import events, render
    except ImportError:  # before typed events: a dict, rendered by each web process
        for k in range(total):
            u = users[k % len(users)]
            seqs[u] += 1
            event = {"kind": "notification", "user_id": u, "notification": notification(u, seqs[u])}
            event["unread_count"] = seqs[u]
            out.append(json.dumps(event, separators=(",", ":")).encode())
        return out
    renderer = render.PayloadRenderer()
    for k in range(total):
        u = users[k % len(users)]
        seqs[u] += 1
        made = renderer.notification_event(u, notification(u, seqs[u]), seqs[u])
        out.append(events.encode(made))
    return out


async def one_format(
    fmt: str, port: int, secret: str, redis_port: int, rate: int, secs: float, proc: Any
) -> float:
    hub = loadgen.Hub()
    prefix = f"w{fmt}{uuid.uuid4().hex[:6]}-"
    users = [f"{prefix}{i:06d}" for i in range(USERS)]
    clients = await loadgen.connect(
        hub, port, [f"/ws?format={fmt}&token={t}" for t in tokens(secret, prefix, USERS)]
    )
    await hub.wait(lambda: hub.greeted >= USERS, 30)
    await asyncio.sleep(1.0)  # let the server settle (presence writes, replays)
    total = int(rate * secs)
    events = make_events(users, total)
    pub = await loadgen.publisher(redis_port)
    cpu0 = proc.cpu_seconds()
    start = time.monotonic_ns()
    sent = 0
    while sent < total:
        due = min(total, (time.monotonic_ns() - start) * rate // 1_000_000_000 + 1)
        if due > sent:
            pub.publish(events[sent:due])
            sent = due
        await asyncio.sleep(0.001)
    if not await hub.wait(lambda: hub.received >= total, 30):
        raise RuntimeError(f"{fmt}: {hub.received} of {total} arrived")
    cpu = proc.cpu_seconds() - cpu0
    for c in clients:
        c.close()
    pub.transport.close()
    return cpu * 1e6 / total


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    tmp, env, servers = start_servers("webcpu", WS_PING_INTERVAL="0")
    suite.REDIS_URL = env["REDIS_URL"]  # where tokens() caches the made-up users' versions
    secret = env["JWT_SECRET"]
    redis_port = int(servers[0].url.rsplit(":", 1)[1])
    proc, port = start_server("notifier", env, tmp)
    try:
        for fmt in ("json", "html"):
            us = asyncio.run(one_format(fmt, port, secret, redis_port, rate, secs, proc))
            print(f"{fmt}: {us:.1f} us of web CPU per message ({rate}/s for {secs:.0f}s)")
    finally:
        proc.stop()
        stop_servers(servers)


if __name__ == "__main__":
    main()
