"""A socket that asks for everything: what one `last_id=000000000000` costs, and others.

Issue 23 #3's finding: a socket opened with `last_id=000000000000` on a user with 20,000
stored was sent all 20,000 (2.1 s of web CPU for html), and twenty such sockets that never
read kept the web process busy and took another user's p50 from 3.5 to 100 ms.

Starts its own SecantusDB and redis-server, stores --history notifications for one user
(as the writers would), starts `python -m web` from --code (this tree by default; point
it at a worktree of an older commit to compare), then:

1. one html socket with last_id=000000000000 reads until nothing comes for a second:
   the frames it got and the web process's CPU seconds meanwhile;
2. --sockets such sockets of that user that never read, while another user's socket
   sends PINGS pings one after another: that user's p50 and p99 round trip, and the web
   CPU over the whole round (the peer, in the same run: the same pings with nobody else).

    .venv/bin/python bench/replay_bound.py [--history 20000] [--sockets 20] [--code DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from websockets.asyncio import client as ws_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handshake_ladder import cpu_seconds, start_web  # noqa: E402
from seed import known_users, store_notifications  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402

PINGS = 80  # a socket may send 100 messages a minute


async def read_everything(url: str) -> int:
    """Frames a socket is sent until it has been quiet for a second (the greeting too)."""
    frames = 0
    async with ws_client.connect(url, max_size=None) as sock:
        while True:
            try:
                await asyncio.wait_for(sock.recv(), 1.0)
            except TimeoutError:
                return frames
            frames += 1


async def ping_round_trips(url: str, n: int) -> list[float]:
    async with ws_client.connect(url) as sock:
        await sock.recv()  # connection-established
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await sock.send('{"type":"ping"}')
            while '"pong"' not in str(await asyncio.wait_for(sock.recv(), 30)):
                pass
            samples.append((time.perf_counter() - started) * 1000)
        return samples


async def with_hoarders(hoarders: list[str], probe: str) -> list[float]:
    """Open the sockets that never read, then time the probe's pings beside them."""
    socks = await asyncio.gather(*(ws_client.connect(u, max_size=None) for u in hoarders))
    try:
        await asyncio.sleep(0.5)  # their replays are under way
        return await ping_round_trips(probe, PINGS)
    finally:
        for s in socks:
            s.transport.abort()


def p(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--history", type=int, default=20_000)
    args.add_argument("--sockets", type=int, default=20)
    args.add_argument("--code", type=Path, default=ROOT, help="the tree `python -m web` runs")
    opts = args.parse_args()
    tmp, env, servers = start_servers("replay")
    port, secret = free_port(), env["JWT_SECRET"]
    # The sockets that ask for everything are one user's (as in the finding): let them all in.
    env |= {"PORT": str(port), "PYTHONPATH": str(opts.code), "CONNECTIONS_PER_USER": "100"}
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    web = None
    try:
        db = client.get_default_database()
        users = [f"{n:024x}" for n in (1, 2)]  # the one with a history, and a prober
        store_notifications(db, users[0], opts.history, unread=opts.history)
        web = start_web(opts.code, env, tmp / "web.log", pin=False)
        known_users(env["REDIS_URL"], users)
        base = f"ws://127.0.0.1:{port}/ws"

        def url(user_id: str, everything: bool) -> str:
            """The hoarders' html sockets ask for everything; the prober's json one pings."""
            token = issue_token(secret, user_id, "bench", "shopper", 3600)
            if everything:
                return f"{base}?format=html&token={token}&last_id=000000000000"
            return f"{base}?format=json&token={token}"

        alone = asyncio.run(ping_round_trips(url(users[-1], False), PINGS))
        cpu0 = cpu_seconds(web.pid)
        frames = asyncio.run(read_everything(url(users[0], True)))
        reader_cpu = cpu_seconds(web.pid) - cpu0
        hoarders = [url(users[0], True) for _ in range(opts.sockets)]
        cpu0, started = cpu_seconds(web.pid), time.monotonic()
        beside = asyncio.run(with_hoarders(hoarders, url(users[-1], False)))
        round_cpu, round_s = cpu_seconds(web.pid) - cpu0, time.monotonic() - started
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        client.close()
        stop_servers(servers)
    print(
        f"code {opts.code}: {opts.history} stored per user\n"
        f"  one socket with last_id=000000000000 (html): {frames} frames,"
        f" {reader_cpu:.2f} s of web CPU\n"
        f"  another user's ping round trip, alone: p50 {statistics.median(alone):.1f} ms,"
        f" p99 {p(alone, 0.99):.1f} ms\n"
        f"  beside {opts.sockets} such sockets that never read:"
        f" p50 {statistics.median(beside):.1f} ms, p99 {p(beside, 0.99):.1f} ms;"
        f" web CPU {100 * round_cpu / round_s:.0f}% over {round_s:.1f} s"
    )


if __name__ == "__main__":
    main()
