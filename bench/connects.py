"""Connects per second to /ws for a user with a long unread history, and the history page.

Starts its own SecantusDB and redis-server, stores HISTORY unread notifications for one
user (in bulk, with the schema the writers use, and the state document and the old
`counters` document they would have kept), starts `python -m web` from --code (this tree
by default; point it at an export of an older commit to compare), then:

1. opens --sequential sockets one after another (connect, read the greeting, close);
2. opens --concurrent sockets at once and waits for every greeting;
(the sockets are opened as --users users in turn: one user may make 40 handshakes at once)
3. times GET /history (the first page) a few times.

Each round also says the CPU it cost per handshake: the web process's, Redis's,
SecantusDB's and this client's own (its share of a core: near 100% means the client, not
the server, bounds the rate). --rounds repeats the concurrent round on the same server
(the median is printed). The concurrent rounds open their sockets with the raw-protocol
load generator of `make bench` (bench/loadgen.py); --client websockets uses the
`websockets` library as before, whose CPU per handshake (0.7-1.1 ms) is about the
server's: sharing the 2 cores with the server, it bounds the rate as much as the server.

    .venv/bin/python bench/connects.py [--history 66000] [--sequential 200]
        [--concurrent 500] [--users 20] [--rounds 1] [--client lean]
        [--code DIR [--code OTHER_DIR --pairs 3]]  # trees measured in turn, same data
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from websockets.asyncio import client as ws_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import loadgen  # noqa: E402
from seed import known_users, store_histories  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.accounts.users import create_user  # noqa: E402
from notifier.dev.embedded import free_port, start_mongo, start_redis  # noqa: E402
from notifier.notifications.store import format_id  # noqa: E402
from notifier.storage.schema import ensure_indexes  # noqa: E402
from notifier.storage.writes import apply  # noqa: E402

PAGE_SAMPLES = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all ports)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads have waited, runnable, for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e9


class Meter:
    """CPU per handshake of each process taking part, over one round."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def __enter__(self) -> Meter:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.mine, self.started = time.process_time(), time.perf_counter()
        self.overflows = listen_overflows()
        self.waited = run_queue_wait(self.pids["web"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.started
        self.spent = {n: cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}
        self.spent["client"] = time.process_time() - self.mine
        self.overflows = listen_overflows() - self.overflows
        self.waited = run_queue_wait(self.pids["web"]) - self.waited

    def line(self, n: int, rate: float) -> str:
        per = ", ".join(f"{name} {s * 1000 / n:.2f}" for name, s in self.spent.items())
        return (
            f"{rate:.1f}/s; CPU ms per handshake: {per};"
            f" client at {100 * self.spent['client'] / self.wall:.0f}% of a core;"
            f" {self.overflows} listen queue overflows;"
            f" the web process busy {100 * self.spent['web'] / self.wall:.0f}% of the time,"
            f" waiting for a CPU {100 * self.waited / self.wall:.0f}%"
        )


async def connect_once(url: str) -> None:
    async with ws_client.connect(url) as sock:
        await sock.recv()  # connection-established


async def sequential(urls: list[str], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await connect_once(urls[i % len(urls)])
    return n / (time.perf_counter() - started)


async def concurrent(urls: list[str], n: int) -> float:
    started = time.perf_counter()
    socks = await asyncio.gather(
        *(ws_client.connect(urls[i % len(urls)], open_timeout=120) for i in range(n))
    )
    await asyncio.gather(*(s.recv() for s in socks))
    rate = n / (time.perf_counter() - started)
    await asyncio.gather(*(s.close() for s in socks))
    return rate


async def concurrent_lean(port: int, paths: list[str]) -> float:
    hub = loadgen.Hub()
    started = time.perf_counter()
    clients = await loadgen.connect(hub, port, paths, batch=len(paths))
    rate = len(paths) / (time.perf_counter() - started)
    for c in clients:
        c.close()
    return rate


async def first_page_ms(port: int, token: str, history: int) -> float:
    samples = []
    for _ in range(PAGE_SAMPLES):
        ms, body = await loadgen.timed_get(port, "/history", token)
        samples.append(ms)
        if history > 20:  # the newest page, not the oldest
            assert format_id(1) not in body.decode()
    return statistics.median(samples)


def start_web(code: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m web` from `code`, once it listens (the log is shared by every start)."""
    ready = (log.read_bytes().count(b"listening on port") if log.exists() else 0) + 1
    with log.open("ab") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "web"], cwd=code, env=env, stdout=out, stderr=out
        )
    loadgen.wait_listening(web, log, ready, 60)
    return web


def measure(
    opts: argparse.Namespace,
    web: subprocess.Popen[bytes],
    pids: dict[str, int],
    port: int,
    urls: list[str],
) -> tuple[float, float]:
    """The sequential round, then --rounds concurrent ones: their rates (median of these)."""
    pids = {"web": web.pid, **pids}
    idle = cpu_seconds(web.pid)
    time.sleep(3)
    print(f"  idle web process: {100 * (cpu_seconds(web.pid) - idle) / 3:.1f}% of a core")
    with Meter(pids) as seq_cpu:
        seq_rate = asyncio.run(sequential(urls, opts.sequential))
    print(f"  sequential: {seq_cpu.line(opts.sequential, seq_rate)}", flush=True)
    rates: list[float] = []
    spy = None
    if opts.profile:  # py-spy on the web process through the concurrent rounds
        spy = subprocess.Popen(
            [
                Path(sys.executable).parent / "py-spy",
                "record",
                "--pid",
                str(web.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "-o",
                str(opts.profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    for _ in range(opts.rounds):
        time.sleep(1.5)  # the server forgets the last round's sockets (and lingers)
        with Meter(pids) as conc_cpu:
            if opts.client == "lean":
                paths = [u.split(f":{port}", 1)[1] for u in urls]
                paths = [paths[i % len(paths)] for i in range(opts.concurrent)]
                rates.append(asyncio.run(concurrent_lean(port, paths)))
            else:
                rates.append(asyncio.run(concurrent(urls, opts.concurrent)))
        print(f"  concurrent: {conc_cpu.line(opts.concurrent, rates[-1])}", flush=True)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    return seq_rate, statistics.median(rates)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--history", type=int, default=66_000)
    args.add_argument("--sequential", type=int, default=200)
    args.add_argument("--concurrent", type=int, default=500)
    # Each user may make 40 handshakes at once (notifier/realtime/socket_limit.py): the
    # concurrent round opens its sockets as this many users, each with the same history.
    args.add_argument("--users", type=int, default=20)
    args.add_argument("--format", choices=("json", "html"), default="json")
    args.add_argument("--rounds", type=int, default=1, help="concurrent rounds (median printed)")
    args.add_argument("--client", choices=("websockets", "lean"), default="lean")
    args.add_argument("--profile", type=Path, help="py-spy's raw profile of the concurrent rounds")
    args.add_argument(
        "--code",
        type=Path,
        action="append",
        help="the tree `python -m web` runs (this one by default); given more than once, "
        "each runs a server of its own on the same data, measured in turn --pairs times",
    )
    args.add_argument("--pairs", type=int, default=1, help="times each --code is measured")
    opts = args.parse_args()
    codes = opts.code or [ROOT]
    tmp = Path(tempfile.mkdtemp(prefix="notifier-connects-"))
    mongo = start_mongo(tmp / "mongo", tmp / "mongo.log")
    redis = start_redis(tmp / "redis", tmp / "redis.log")
    port, secret = free_port(), "bench-" + uuid.uuid4().hex * 2
    env = {
        **os.environ,
        "MONGODB_URI": mongo.url + "/bench",
        "REDIS_URL": redis.url + "/0",
        "JWT_SECRET": secret,
        "PORT": str(port),
        "VAR_DIR": str(tmp),
        "CONNECTIONS_PER_USER": str(opts.concurrent + 10),  # measure connects, not evictions
        "CONNECTIONS_PER_ADDRESS": str(opts.concurrent + opts.sequential + 10),  # one client host
    }
    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    webs: dict[Path, subprocess.Popen[bytes]] = {}
    figures: dict[Path, list[tuple[float, float]]] = {code: [] for code in codes}
    try:
        db = client.get_default_database()
        ensure_indexes(db)
        names = [f"historian{n}" for n in range(opts.users)]
        apply(db, [create_user(name, "x") for name in names])
        user_ids = [str(u["_id"]) for u in db.users.find({"username": {"$in": names}})]
        started = time.monotonic()
        store_histories(db, user_ids, opts.history, unread=opts.history)
        stored_s = time.monotonic() - started
        known_users(env["REDIS_URL"], user_ids)
        tokens = [issue_token(secret, u, "historian", "shopper", 3600) for u in user_ids]
        urls = [f"ws://127.0.0.1:{port}/ws?format={opts.format}&token={t}" for t in tokens]
        others = {"redis": redis.process.pid, "mongo": mongo.process.pid}
        # Every tree's server runs from the start, each on its port, and they are measured
        # in turn: a shared machine's load drifts, and this way it drifts for all alike.
        ports = {code: port if i == 0 else free_port() for i, code in enumerate(codes)}
        for code in codes:
            webs[code] = start_web(code, {**env, "PORT": str(ports[code])}, tmp / "web.log")
        for _ in range(opts.pairs):
            for code in codes:
                load = os.getloadavg()[0]
                print(f"code {code} (load average {load:.2f}):", flush=True)
                here = [u.replace(f":{port}/", f":{ports[code]}/") for u in urls]
                figures[code].append(measure(opts, webs[code], others, ports[code], here))
        page_ms = asyncio.run(first_page_ms(port, tokens[0], opts.history))
    finally:
        for web in webs.values():
            web.terminate()
            web.wait(30)
        client.close()
        redis.stop()
        mongo.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # 50,000 stored notifications: 100 MB
    print(f"{opts.users} users with {opts.history} unread stored each ({stored_s:.1f}s to insert)")
    for code, runs in figures.items():
        seq = statistics.median(r[0] for r in runs)
        conc = [f"{r[1]:.1f}" for r in runs]
        print(
            f"code {code}:\n  {opts.sequential} sequential connects: {seq:.1f}/s (median)\n"
            f"  {opts.concurrent} concurrent connects: {', '.join(conc)}/s"
            f" (each the median of {opts.rounds} rounds, {opts.client} client)"
        )
    print(f"/history first page: {page_ms:.1f} ms (median of {PAGE_SAMPLES})")


if __name__ == "__main__":
    main()
