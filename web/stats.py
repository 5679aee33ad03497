"""Connection statistics across web processes, shared through a Redis hash."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
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
# Each report rewrites the presence of one share of the users, so each user's is rewritten
# every PRESENCE_SHARES * INTERVAL seconds (20 s, a third of presence.TTL; a handshake
# writes it at once). All of them every report held the loop and Redis long enough, at
# 11,000 users, to take p99 at 5,000 msg/s from 3.0 ms to 5.5-5.9.
PRESENCE_SHARES = 4
STALE_AFTER = STATS_STALE_AFTER  # three missed reports


def presence_share(users: Iterable[str], report: int) -> list[str]:
    """The users whose presence report number `report` rewrites: every user once in any
    PRESENCE_SHARES reports in a row."""
    share = report % PRESENCE_SHARES
    return [u for u in users if hash(u) % PRESENCE_SHARES == share]


async def report(client: aioredis.Redis, process: str, registry: ConnectionRegistry) -> None:
    """Every INTERVAL seconds until cancelled: this process's figures, and a share of its
    users' presence."""
    presence = Presence(client, process)
    reports = 0
    try:
        while True:
            try:
                counts = registry.stats()
                # Kept current here too: with several web processes a scrape reads them all.
                metrics.OPEN_CONNECTIONS.set(counts["connections"])
                metrics.USERS_ONLINE.set(counts["users"])
                figures = {**counts, "process": process, "at": time.time()}
                await client.hset(KEY, process, json.dumps(figures))
                await presence.here(presence_share(registry.users(), reports))
                reports += 1
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
