"""Many sockets closing at once: what it costs the next handshake, and MongoDB.

A web process holds N sockets (made-up users, json). One announcement is broadcast, so
every socket has heard something its user must not be shown again; then every socket is
dropped at once (as a load balancer restart or a network blip does). Each closed socket
notes its user's announcements mark in MongoDB. Measured: the time until every mark is
stored, and how long handshakes take while that happens (`--probes` sequential connects
of other users started right after the drop).

    .venv/bin/python bench/mass_close.py [--sockets 5000] [--probes 50] [--code DIR]

`--code` runs `python -m web` from another tree (an export of an older commit) to
compare; the load generator and servers are this tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import redis  # noqa: E402
from loadgen import Hub  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from seed import known_users  # noqa: E402
from servers import start_servers  # noqa: E402
from suite import Proc  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402
from notifier.realtime import bus  # noqa: E402
from notifier.realtime.render import PayloadRenderer  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402


async def measure(port: int, env: dict[str, str], sockets: int, probes: int) -> dict[str, Any]:
    secret, prefix = env["JWT_SECRET"], f"mc{uuid.uuid4().hex[:6]}-"
    held = [f"{prefix}h{i:06d}" for i in range(sockets)]
    others = [f"{prefix}p{i:06d}" for i in range(probes)]
    known_users(env["REDIS_URL"], held + others)
    hub = Hub()
    paths = [f"/ws?format=json&token={issue_token(secret, u, u, 'shopper', 3600)}" for u in held]
    clients = await loadgen.connect(hub, port, paths, batch=500)
    announcement = {
        "id": uuid.uuid4().hex,
        "message": "Closing time",
        "severity": "info",
        "created_at": datetime.now(UTC).isoformat(),
    }
    publisher = redis.Redis.from_url(env["REDIS_URL"])
    publisher.publish(bus.BROADCAST, bus.encode(PayloadRenderer().announcement_event(announcement)))
    publisher.close()
    if not await hub.wait(lambda: hub.received >= sockets, 60):
        raise SystemExit(f"only {hub.received} of {sockets} heard the announcement")
    db: Any = MongoClient(env["MONGODB_URI"]).get_default_database()
    dropped = time.monotonic()
    for c in clients:
        c.close()
    connect_ms = []
    for user in others:  # one at a time, as new visitors arrive
        started = time.monotonic()
        probe = Hub()
        token = issue_token(secret, user, user, "shopper", 3600)
        [client] = await loadgen.connect(probe, port, [f"/ws?format=json&token={token}"], 1)
        connect_ms.append((time.monotonic() - started) * 1000)
        client.close()
    marked = {"announcements_seen_at": {"$exists": True}, "_id": {"$regex": f"^{prefix}h"}}
    while db.user_state.count_documents(marked) < sockets:
        if time.monotonic() - dropped > 300:
            raise SystemExit("the marks were not all stored within 300 s")
        await asyncio.sleep(0.05)
    return {
        "sockets": sockets,
        "marks_stored_s": time.monotonic() - dropped,
        "probe_connect_ms_p50": statistics.median(connect_ms),
        "probe_connect_ms_max": max(connect_ms),
    }


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sockets", type=int, default=5000)
    args.add_argument("--probes", type=int, default=50)
    args.add_argument("--code", type=Path, default=ROOT, help="the tree `python -m web` runs")
    opts = args.parse_args()
    tmp, env, servers = start_servers("close", WS_PING_INTERVAL="0")
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
        ensure_indexes(client.get_default_database())
        client.close()
        port = free_port()
        web = Proc(
            "notifier",
            ["taskset", "-c", "0", sys.executable, "-m", "web"],
            {**env, "PORT": str(port)},
            opts.code,
            tmp / "web.log",
        )
        web.wait_ready()
        try:
            result = asyncio.run(measure(port, env, opts.sockets, opts.probes))
        finally:
            web.stop()
    finally:
        for s in servers:
            s.stop()
    print(json.dumps({"code": str(opts.code), **result}))


if __name__ == "__main__":
    main()
