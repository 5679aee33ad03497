"""Connection statistics across web processes, shared through a Redis hash."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis

from notifier import metrics
from notifier.realtime.presence import STATS_KEY, STATS_STALE_AFTER, Presence
from notifier.realtime.registry import ConnectionRegistry

log = logging.getLogger(__name__)

KEY = STATS_KEY
INTERVAL = 5.0
STALE_AFTER = STATS_STALE_AFTER  # three missed reports


async def report(client: aioredis.Redis, process: str, registry: ConnectionRegistry) -> None:
    """Every INTERVAL seconds until cancelled: this process's figures, and its users' presence."""
    presence = Presence(client, process)
    try:
        while True:
            try:
                counts = registry.stats()
                # Kept current here too: with several web processes a scrape reads them all.
                metrics.OPEN_CONNECTIONS.set(counts["connections"])
                metrics.USERS_ONLINE.set(counts["users"])
                figures = {**counts, "process": process, "at": time.time()}
                await client.hset(KEY, process, json.dumps(figures))
                await presence.here(registry.users())
            except (redis.RedisError, OSError) as e:
                log.warning("could not report connection stats: %s", e)
            await asyncio.sleep(INTERVAL)
    finally:
        try:
            await client.hdel(KEY, process)
        except (redis.RedisError, OSError):
            pass


class ProcessStats(msgspec.Struct):
    """One web process's sockets and users."""

    process: str
    connections: int
    users: int


class Stats(msgspec.Struct):
    """Connections and users across web processes (GET /api/stats, the admin page)."""

    connections: int
    users: int
    processes: list[ProcessStats]


async def gather(client: aioredis.Redis, process: str, registry: ConnectionRegistry) -> Stats:
    """Totals and per-process figures; this process's own are always current."""
    raw = await client.hgetall(KEY)
    now = time.time()
    processes: dict[str, dict[str, Any]] = {
        process: {**registry.stats(), "process": process, "at": now}
    }
    for value in raw.values():
        try:
            p = json.loads(value)
        except ValueError:
            continue
        if (
            isinstance(p, dict)
            and p.get("process") != process
            and now - p.get("at", 0) < STALE_AFTER
        ):
            processes[p["process"]] = p
    rows = sorted(processes.values(), key=lambda p: p["process"])
    return Stats(
        connections=sum(p["connections"] for p in rows),
        users=sum(p["users"] for p in rows),
        processes=[ProcessStats(p["process"], p["connections"], p["users"]) for p in rows],
    )
