"""Issue 19's scenarios for `make bench`: routing, scale-out, connects, memory, live first.

Each starts its own web processes (default settings: pings on) against the suite's Redis
and SecantusDB, pinned to core 0 like the suite's servers; the load generator and its
helper processes stay on core 1. CPU is read from /proc/<pid>/task/*/schedstat (the
nanoseconds each thread ran), summed over a server's whole process tree: /proc/<pid>/stat
counts in 10 ms ticks, too coarse for a process that should spend almost nothing.

- routing: processes A and B, 1,000 json sockets on A only; targeted events at 5,000 and
  15,000 msg/s on the users' channels. B's CPU per event (all of it, its own timers
  included; also reported less what B spent idle just before) against A's CPU per
  delivery. Both servers, the peer with per-user
  channels too.
- scale-out: the same 1,000 users spread over 1, 2 and 4 processes (notifier:
  WEB_CONCURRENCY on one port, the kernel spreading connections; the peer: that many
  processes on their own ports, the clients dealt round-robin); total CPU per delivery.
- connects: one process filled to 19,000 sockets (helpers of bench/clients.py, each its
  own process under the open-file limit), the handshake rate between 1,000 and 2,000
  open against the rate between 18,000 and 19,000; then 500 concurrent handshakes of
  500 users with a stored history.
- memory: one process per format, N sockets that each receive 5 messages; RSS per socket.
- live first: a deal for 100,000 watchers of whom 1,000, spread evenly through the id
  range, are online: the time to the last online socket's notification.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
from handshake_ladder import SOURCES, close_helpers, open_step  # noqa: E402
from seed import known_users  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402

ROUTING_RATES = (5000, 15000)
ROUTING_USERS = 1000
SCALE_PROCS = (1, 2, 4)
SCALE_RATE = 5000
LADDER_TOP = 19_000
LADDER_STEP = 1_000
MESSAGES_PER_SOCKET = 5
MEMORY_RATE = 4000  # msg/s


# Processes and their CPU -------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """`pid` and every process below it (a WEB_CONCURRENCY parent's children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_ns(pids: list[int]) -> int:
    """Nanoseconds of CPU the threads of `pids` have run (schedstat's first field)."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class Servers:
    """One server under test as `procs` processes: notifier's WEB_CONCURRENCY on one port,
    or the peer's separate processes on ports of their own."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path, procs: int = 1) -> None:
        self.name = name
        self.popens: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.log = tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"
        starts = 1 if name == "notifier" else procs
        try:
            for _ in range(starts):
                port = free_port()
                run_env = {**env, "PORT": str(port), "WEB_CONCURRENCY": str(procs)}
                if name == "notifier":
                    argv = ["taskset", "-c", "0", sys.executable, "-m", "web"]
                    cwd = ROOT
                else:
                    argv = ["taskset", "-c", "0", "node", "server.js"]
                    cwd = BENCH / "peers" / "node-ws"
                with self.log.open("ab") as out:
                    self.popens.append(
                        subprocess.Popen(argv, env=run_env, cwd=cwd, stdout=out, stderr=out)
                    )
                self.ports.append(port)
            self._wait_ready(procs)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, procs: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_bytes().count(b"listening on port") < procs:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.popens):
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        return [p for popen in self.popens for p in tree(popen.pid)]

    def cpu_ns(self) -> int:
        return cpu_ns(self.pids())

    def rss_kib(self) -> int:
        return rss_kib(self.pids())

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen in self.popens:
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                for pid in tree(popen.pid)[1:]:
                    os.kill(pid, signal.SIGKILL)
                popen.kill()
                popen.wait()


# Targeted traffic ----------------------------------------------------------------------------


def make_users(redis_url: str, secret: str, n: int, tag: str) -> tuple[list[str], list[str]]:
    """n made-up users with cached token versions, and their tokens."""
    prefix = f"{tag}{uuid.uuid4().hex[:6]}-"
    users = [f"{prefix}{i:06d}" for i in range(n)]
    known_users(redis_url, users)
    return users, [issue_token(secret, u, u, "shopper", 7200) for u in users]


async def routing(
    name: str, env: dict[str, str], tmp: Path, redis_port: int, template: str, seconds: float
) -> list[dict[str, Any]]:
    """B's CPU per event it does not hold, against A's CPU per delivery."""
    a, b = Servers(name, env, tmp), Servers(name, env, tmp)
    pub = await loadgen.publisher(redis_port)
    hub = loadgen.Hub()
    out = []
    try:
        users, toks = make_users(env["REDIS_URL"], env["JWT_SECRET"], ROUTING_USERS, "r")
        paths = [f"/ws?format=json&token={t}" for t in toks]
        clients = await loadgen.connect(hub, a.ports[0], paths)
        await asyncio.sleep(1.0)
        chans, seqs = loadgen.channels(users), [0] * len(users)
        for rate in ROUTING_RATES:
            total = int(rate * seconds)
            b0, t0 = b.cpu_ns(), time.monotonic()
            await asyncio.sleep(seconds)  # B idle: its own timers, the baseline
            b_idle_per_s = (b.cpu_ns() - b0) / (time.monotonic() - t0)
            base = hub.received
            a0, b0, t0 = a.cpu_ns(), b.cpu_ns(), time.monotonic()
            await loadgen.send_at(pub, template, users, chans, seqs, rate, total)
            # A server that cannot keep up loses some (Redis drops a subscriber that falls
            # too far behind): counted, and the CPU is per message delivered.
            await hub.wait(lambda base=base, total=total: hub.received >= base + total, 20)  # type: ignore[misc]
            delivered = hub.received - base
            wall = time.monotonic() - t0
            a_ns, b_ns = a.cpu_ns() - a0, b.cpu_ns() - b0
            step = {
                "rate": rate,
                "events": total,
                "lost": total - delivered,
                "holding_us_per_delivery": a_ns / max(1, delivered) / 1000,
                "other_us_per_event_raw": b_ns / total / 1000,
                "other_idle_us_per_s": b_idle_per_s / 1000,
                "other_us_per_event": max(0.0, b_ns - b_idle_per_s * wall) / total / 1000,
            }
            # The target's figure is the raw one (B's own timers included): the net one
            # is within /proc's noise of zero.
            step["other_share"] = step["other_us_per_event_raw"] / step["holding_us_per_delivery"]
            out.append(step)
            print(
                f"  routing {name} {rate}/s: holding {step['holding_us_per_delivery']:.1f} us/"
                f"delivery, other {step['other_us_per_event']:.3f} us/event "
                f"(raw {step['other_us_per_event_raw']:.3f}: {100 * step['other_share']:.2f}%)",
                flush=True,
            )
        for c in clients:
            c.close()
    finally:
        pub.transport.close()
        a.stop()
        b.stop()
    return out


async def scale_out(
    name: str, env: dict[str, str], tmp: Path, redis_port: int, template: str, seconds: float
) -> list[dict[str, Any]]:
    """Total web CPU per delivered message with the users spread over 1, 2 and 4 processes."""
    out = []
    for procs in SCALE_PROCS:
        servers = Servers(name, env, tmp, procs)
        pub = await loadgen.publisher(redis_port)
        hub = loadgen.Hub()
        try:
            users, toks = make_users(env["REDIS_URL"], env["JWT_SECRET"], ROUTING_USERS, "s")
            clients: list[loadgen.WsClient] = []
            for i, port in enumerate(servers.ports):  # the peer: dealt round-robin
                some = toks[i :: len(servers.ports)]
                clients += await loadgen.connect(
                    hub, port, [f"/ws?format=json&token={t}" for t in some]
                )
            await asyncio.sleep(1.0)
            chans, seqs = loadgen.channels(users), [0] * len(users)
            total = int(SCALE_RATE * seconds)
            c0, t0 = servers.cpu_ns(), time.monotonic()
            await loadgen.send_at(pub, template, users, chans, seqs, SCALE_RATE, total)
            await hub.wait(lambda hub=hub, total=total: hub.received >= total, 20)  # type: ignore[misc]
            delivered = hub.received
            step = {
                "processes": procs,
                "rate": SCALE_RATE,
                "deliveries": delivered,
                "lost": total - delivered,
                "us_per_delivery": (servers.cpu_ns() - c0) / max(1, delivered) / 1000,
                "seconds": time.monotonic() - t0,
            }
            out.append(step)
            print(
                f"  scale-out {name} x{procs}: {step['us_per_delivery']:.1f} us/delivery",
                flush=True,
            )
            for c in clients:
                c.close()
        finally:
            pub.transport.close()
            servers.stop()
    return out


# Connects ------------------------------------------------------------------------------------


def handshake_ladder(env: dict[str, str], tmp: Path, quick: bool) -> dict[str, Any]:
    """The handshake rate with 1,000 open against 18,000 (helpers of bench/clients.py)."""
    top, step = (3000, 500) if quick else (LADDER_TOP, LADDER_STEP)
    server = Servers("notifier", env, tmp)
    helpers: list[subprocess.Popen[bytes]] = []
    port = server.ports[0]
    try:
        _, toks = make_users(env["REDIS_URL"], env["JWT_SECRET"], top, "l")
        paths = [f"/ws?format=json&token={t}" for t in toks]
        # Measured: the step after the first (step..2*step open) and the last one; between
        # them the sockets go in in bigger helpers (each under its open-file limit).
        plan = [(0, step), (step, 2 * step)]
        start = 2 * step
        while start < top - step:
            end = min(top - step, start + 6 * step)
            plan.append((start, end))
            start = end
        plan.append((top - step, top))
        steps = []
        for lo, hi in plan:
            c0 = server.cpu_ns()
            source = SOURCES[len(helpers) % len(SOURCES)]  # see handshake_ladder.SOURCES
            helper, secs = open_step(port, paths[lo:hi], pin=True, source=source)
            helpers.append(helper)
            steps.append(
                {
                    "open_before": lo,
                    "sockets": hi - lo,
                    "per_s": (hi - lo) / secs,
                    "server_cpu_ms_per_handshake": (server.cpu_ns() - c0) / (hi - lo) / 1e6,
                }
            )
            print(
                f"  ladder: {lo:>6,} open, {hi - lo:,} more at {steps[-1]['per_s']:,.0f}/s",
                flush=True,
            )
        rss = server.rss_kib()
    finally:
        close_helpers(helpers)
        server.stop()
    return {
        "top": top,
        "steps": steps,
        "low": steps[1],
        "high": steps[-1],
        "rss_kib_at_top": rss,
    }


async def concurrent_history(
    name: str, env: dict[str, str], tmp: Path, tokens: list[str]
) -> dict[str, Any]:
    """One burst of len(tokens) handshakes at once, each a different user with a history."""
    server = Servers(name, env, tmp)
    try:
        await asyncio.sleep(0.5)
        hub = loadgen.Hub()
        paths = [f"/ws?format=html&token={t}" for t in tokens]
        c0, t0 = server.cpu_ns(), time.monotonic()
        clients = await loadgen.connect(hub, server.ports[0], paths, batch=len(paths))
        wall = time.monotonic() - t0
        result = {
            "sockets": len(paths),
            "per_s": len(paths) / wall,
            "server_cpu_ms_per_connect": (server.cpu_ns() - c0) / len(paths) / 1e6,
            "failed": hub.failed,
        }
        for c in clients:
            c.close()
        print(
            f"  {name}: {len(paths)} concurrent handshakes at {result['per_s']:,.0f}/s", flush=True
        )
        return result
    finally:
        server.stop()


# Memory --------------------------------------------------------------------------------------


async def memory_after_messages(
    env: dict[str, str], tmp: Path, redis_port: int, template: str, fmt: str, n: int
) -> dict[str, Any]:
    """RSS per socket of n `fmt` sockets (pings on) after each received 5 messages."""
    server = Servers("notifier", env, tmp)
    pub = await loadgen.publisher(redis_port)
    hub = loadgen.Hub()
    try:
        users, toks = make_users(env["REDIS_URL"], env["JWT_SECRET"], n + 100, "m")
        paths = [f"/ws?format={fmt}&token={t}" for t in toks]
        warm = await loadgen.connect(hub, server.ports[0], paths[:100])
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        clients = await loadgen.connect(hub, server.ports[0], paths[100:])
        chans, seqs = loadgen.channels(users[100:]), [0] * n
        total = n * MESSAGES_PER_SOCKET
        # Well under what one process holds: this measures memory, not throughput.
        await loadgen.send_at(pub, template, users[100:], chans, seqs, MEMORY_RATE, total)
        await hub.wait(lambda: hub.received >= total, 30)
        await asyncio.sleep(2.0)  # the freeze and the sweeps settle
        after = server.rss_kib()
        print(
            f"  memory {fmt}: {(after - before) / n:.2f} KiB/socket after {MESSAGES_PER_SOCKET} messages",
            flush=True,
        )
        for c in warm + clients:
            c.close()
        return {
            "format": fmt,
            "sockets": n,
            "messages_each": MESSAGES_PER_SOCKET,
            "received": hub.received,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_socket": (after - before) / n,
        }
    finally:
        pub.transport.close()
        server.stop()


# Live first ----------------------------------------------------------------------------------


async def _last_online(port: int, env: dict[str, str], online: list[str], item: str) -> float:
    """Post a new best price for `item`; seconds until every online watcher heard of it."""
    import fanout

    secret = env["JWT_SECRET"]
    from bson import ObjectId

    admin_id = str(ObjectId())
    known_users(env["REDIS_URL"], [*online, admin_id])
    hub = loadgen.Hub()
    toks = [issue_token(secret, u, "fan", "shopper", 3600) for u in online]
    clients = await loadgen.connect(hub, port, [f"/ws?format=json&token={t}" for t in toks])
    admin = issue_token(secret, admin_id, "fan-admin", "admin", 3600)
    started = time.monotonic()
    await fanout.post_price(port, admin, item, 500)
    if not await hub.wait(lambda: hub.received >= len(online), 120):
        raise RuntimeError(f"live first: {hub.received} of {len(online)} online sockets heard")
    last = (hub.last_ns / 1e9) - started
    for c in clients:
        c.close()
    return last


def live_first(quick: bool) -> dict[str, Any]:
    """A deal for `watchers` watchers, `online` of them online spread through the id range."""
    import fanout
    from pymongo import MongoClient
    from servers import start_servers, stop_servers

    from notifier.storage.schema import ensure_indexes

    watchers, online_n = (5_000, 100) if quick else (100_000, 1_000)
    port = free_port()
    tmp, env, servers = start_servers("livefirst", PORT=str(port), DEAL_CHECK_INTERVAL="3600")
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = client.get_default_database()
        ensure_indexes(db)
        t0 = time.monotonic()
        users = fanout.seed(db, watchers)  # in id order
        item = "Live-first item"
        fanout.watch_all(db, users, item)
        seeded = time.monotonic() - t0
        online = users[:: watchers // online_n][:online_n]
        port = free_port()  # picked after the seeding's minutes: another may have the first
        env["PORT"] = str(port)
        procs = fanout.start(env, tmp / "livefirst.log", 1)
        last = asyncio.run(_last_online(port, env, online, item))
    finally:
        for proc in procs[1:]:  # the worker: not the rest of the job (a threads pool)
            proc.kill()
        fanout.stop(procs)
        client.close()
        stop_servers(servers)
    print(
        f"  live first: {watchers:,} watchers, the last of {online_n:,} online in {last:.2f} s",
        flush=True,
    )
    return {
        "watchers": watchers,
        "online": online_n,
        "online_spread": "every (watchers / online)-th user in id order",
        "seed_seconds": seeded,
        "last_online_s": last,
    }
