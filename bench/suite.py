"""`make bench`: notifier's web process against the Node `ws` peer, side by side.

Run pinned to core 1 (`taskset -c 1`): this process is the load generator, and the
Redis and MongoDB servers it starts inherit that core. Each server under test runs on
core 0 (`taskset -c 0`), one at a time, interleaved, REPS times, with default settings
(pings on: as deployed). Each repetition measures idle memory and broadcast on a ladder
of sockets, targeted delivery in json and in html (on the users' own channels), and
handshakes of users with a stored history. Then, once, issue 19's scenarios
(bench/scale.py): routing between two processes, scale-out over 1, 2 and 4, the
handshake ladder to 19,000 sockets, memory after messages, the reconnect storm onto a
WEB_CONCURRENCY=2 process (bench/storm.py) and the live-first deal of 100,000 watchers;
and notifier's whole stack (bench/stack.py: posted price to socket, history pages).
Writes bench/results/<date>.json with the `targets` list (and the load average, since
other work on the machine makes every figure noisier); bench/report.py turns it into
the markdown report and plots. bench/many_sockets.py (114,000 sockets, several minutes)
runs apart and merges its row into a results file (`--merge`).

    taskset -c 1 .venv/bin/python bench/suite.py            # make bench (26 min under load)
    BENCH_QUICK=1 taskset -c 1 .venv/bin/python bench/suite.py   # every scenario, small

BENCH_FANOUT=1 adds issue 13's deal-check fan-out (bench/fanout.py, about 15 minutes);
BENCH_FANOUT_FROM=<an earlier results .json> keeps that run's fan-out figures instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import msgspec  # noqa: E402
import scale  # noqa: E402
from loadgen import Hub  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port, stop  # noqa: E402
from web.render import Renderer  # noqa: E402

# BENCH_QUICK=1 (or --quick): every scenario at a small size, to check it works (< 2 min).
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0") or "--quick" in sys.argv
# One repetition fits `make bench` in its time with issue 19's scenarios; BENCH_REPS=3 for medians.
REPS = int(os.environ.get("BENCH_REPS", "1"))
LEVELS = [
    int(n) for n in os.environ.get("BENCH_LEVELS", "100,300" if QUICK else "1000,10000").split(",")
]
# Idle memory at the most sockets one server process may hold under the 20,000-descriptor
# limit (a process also needs descriptors for MongoDB, Redis and its listener).
# Off by default (0): issue 19's ladder fills a process to 19,000 sockets instead.
MAX_SOCKETS = int(os.environ.get("BENCH_MAX_SOCKETS", "0"))
BROADCASTS = {1000: 30, 5000: 10, 10000: 6}  # per level: enough deliveries for /proc's 10 ms ticks
TARGET_USERS = 100 if QUICK else 1000
RATES = [1000, 5000] if QUICK else [1000, 2000, 5000, 10000, 15000, 20000, 30000, 40000, 60000]
REQUIRED_RATES = {1000, 5000} if QUICK else {1000, 5000, 20000}
STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "1" if QUICK else "2"))
P99_LIMIT_MS = 50.0
# Handshakes for users with a stored history (the server reads it on connect), each
# socket a different user: a user's handshake budget (40 at once) is not what is measured.
CONNECT_USERS = 100 if QUICK else 500
CONNECT_HISTORY = 20 if QUICK else 100  # notifications stored per such user
CONNECT_SEQUENTIAL = 30 if QUICK else 200
CONNECT_CONCURRENT = CONNECT_USERS
SCALE_SECONDS = 1.0 if QUICK else 3.0  # per rate in the routing and scale-out scenarios
# Issue 13's fan-out (1 and 2 workers, up to 100,000 watchers) takes about 15 minutes:
# BENCH_FANOUT=1 runs it; issue 19's live-first deal runs always.
FANOUT = os.environ.get("BENCH_FANOUT", "") not in ("", "0")
STORM_SOCKETS = int(os.environ.get("BENCH_STORM_SOCKETS", "300" if QUICK else "10000"))
STORM_TIMEOUT = 20.0 if QUICK else 75.0
STORM_CONNECT_SECONDS = float(os.environ.get("BENCH_STORM_CONNECT_SECONDS", "5" if QUICK else "40"))
# Memory at MAX_SOCKETS costs notifier's handshakes beyond the ladder: in the first reps only.
MAX_SOCKETS_REPS = int(os.environ.get("BENCH_MAX_SOCKETS_REPS", "1"))
SERVERS = tuple(os.environ.get("BENCH_SERVERS", "notifier,node-ws").split(","))
CREATED = "2026-01-01T00:00:00.000Z"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# Processes --------------------------------------------------------------------------------


class Proc:
    """A server under test: its process, CPU time and memory from /proc."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=out)

    def wait_ready(
        self, needle: bytes = b"listening on port", timeout: float = 60, count: int = 1
    ) -> None:
        """Until the log says `needle` `count` times (once per WEB_CONCURRENCY process)."""
        deadline = time.monotonic() + timeout
        while self.log.read_bytes().count(needle) < count:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def open_files(self) -> int:
        return len(list(Path(f"/proc/{self.popen.pid}/fd").iterdir()))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        stop(self.popen, 30)


def start_server(name: str, env: dict[str, str], tmp: Path) -> tuple[Proc, int]:
    port = free_port()
    env = {**env, "PORT": str(port)}
    log = tmp / f"{name}-{port}.log"
    if name == "notifier":
        profile = os.environ.get("BENCH_PROFILE")  # a path: run notifier under cProfile
        argv = [
            "taskset",
            "-c",
            "0",
            sys.executable,
            *(["-m", "cProfile", "-o", profile] if profile else []),
            "-m",
            "web",
        ]
        proc = Proc(name, argv, env, ROOT, log)
    else:
        argv = ["taskset", "-c", "0", "node", "server.js"]
        proc = Proc(name, argv, env, BENCH / "peers" / "node-ws", log)
    proc.wait_ready(count=int(env.get("WEB_CONCURRENCY", "1")) if name == "notifier" else 1)
    return proc, port


# Payloads ----------------------------------------------------------------------------------


def padded(render: Callable[[str], str], size: int) -> str:
    """Padding for a message so that `render(message)` is about `size` bytes."""
    base = len(render("").encode())
    per_char = len(render("x").encode()) - base  # the message may appear more than once
    return "x" * max(0, (size - base) // max(1, per_char))


def announcement_event(renderer: Renderer, pad: str) -> bytes:
    """A broadcast: notifier renders the announcement; the peer gets the same bytes."""
    a = {
        "id": uuid.uuid4().hex,
        "message": "Bench " + pad,
        "severity": "info",
        "created_at": CREATED,
    }
    event = renderer.announcement_event(a)  # rendered once, as notifier's writers do
    bench = {fmt: event.payload(fmt) for fmt in ("html", "json")}
    return json.dumps(
        {**msgspec.to_builtins(event), "bench": bench}, separators=(",", ":")
    ).encode()


def notification_template(pad: str, renderer: Renderer) -> str:
    """A targeted notification event as a %-template (user, seq, scheduled time).

    `bench.json` and `bench.html` are what notifier's renderer makes of the same event
    (only the envelope's timestamp differs), so the peer sends the bytes notifier does.
    """
    message = "bench @@TTTT@@ " + pad
    notification = {
        "id": "IIII",
        "type": "system-message",
        "created_at": CREATED,
        "read": False,
        "data": {"message": message, "severity": "info"},
    }
    envelope = {
        "type": "system-message",
        "data": {
            "message": message,
            "severity": "info",
            "id": "IIII",
            "created_at": CREATED,
            "unread_count": "SSSS",
        },
        "timestamp": CREATED,
    }
    html = renderer.notification({"notification": notification, "unread_count": "SSSS"}, "html")
    payload = json.dumps(envelope, separators=(",", ":"))
    event = {  # a NotificationEvent (notifier/realtime/events.py), payloads made by the writer
        "kind": "notification",
        "user_id": "UUUU",
        "seq": "SSSS",
        "type": "system-message",
        "created_at": datetime.fromisoformat(CREATED).timestamp(),
        "html": html,
        "json": payload,
        "bench": {"json": payload, "html": html},
    }
    text = json.dumps(event, separators=(",", ":")).replace("%", "%%")
    for placeholder, spec in (
        ('\\"SSSS\\"', "%(s)d"),
        ('"SSSS"', "%(s)d"),
        ("SSSS", "%(s)d"),
        ("UUUU", "%(u)s"),
        ("IIII", "%(s)012d"),
        ("TTTT", "%(t)d"),
    ):
        text = text.replace(placeholder, spec)
    return text


# Scenarios ---------------------------------------------------------------------------------


REDIS_URL = ""  # set by main(): the bench's users' token versions are cached there


def tokens(secret: str, prefix: str, n: int) -> list[str]:
    from seed import known_users

    known_users(REDIS_URL, [f"{prefix}{i:06d}" for i in range(n)])
    return [
        issue_token(secret, f"{prefix}{i:06d}", f"{prefix}{i}", "shopper", 7200) for i in range(n)
    ]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def idle_and_broadcast(
    proc: Proc, port: int, secret: str, prefix: str, renderer: Renderer, pub: loadgen.Publisher
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[loadgen.WsClient]]:
    hub = Hub()
    pad = padded(
        lambda p: renderer.announcement(
            {
                "announcement": {
                    "id": "x" * 32,
                    "message": "Bench " + p,
                    "severity": "info",
                    "created_at": CREATED,
                }
            },
            "html",
        ),
        500,
    )
    base_rss = proc.rss_kib()
    clients: list[loadgen.WsClient] = []
    toks = tokens(secret, prefix, max(LEVELS))
    idle, broadcast = [], []
    for level in LEVELS:
        paths = [f"/ws?format=html&token={t}" for t in toks[len(clients) : level]]
        started = time.monotonic()
        clients += await loadgen.connect(hub, port, paths)
        connect_s = time.monotonic() - started
        await asyncio.sleep(1.0)  # let the server settle (presence writes, replays)
        rss = proc.rss_kib()
        idle.append(
            {
                "connections": level,
                "rss_kib": rss,
                "base_rss_kib": base_rss,
                "kib_per_connection": (rss - base_rss) / level,
                "connect_per_s": len(paths) / connect_s,
            }
        )
        events = [announcement_event(renderer, pad) for _ in range(BROADCASTS.get(level, 5))]
        cpu0, mine0, lasts = proc.cpu_seconds(), time.process_time(), []
        wall0 = time.monotonic()
        for event in events:
            want = hub.received + level
            sent = time.monotonic_ns()
            pub.publish([event])
            if not await hub.wait(lambda want=want: hub.received >= want, 60):  # type: ignore[misc]
                raise RuntimeError(f"{proc.name}: a broadcast to {level} did not arrive")
            lasts.append((hub.last_ns - sent) / 1e6)
        cpu, mine = proc.cpu_seconds() - cpu0, time.process_time() - mine0
        wall = time.monotonic() - wall0
        deliveries = level * len(events)
        broadcast.append(
            {
                "connections": level,
                "broadcasts": len(events),
                "payload_bytes": hub.last_size,
                "cpu_us_per_delivery": cpu * 1e6 / deliveries,
                "last_receipt_ms_p50": statistics.median(lasts),
                "last_receipt_ms_max": max(lasts),
                "loadgen_cpu_pct": 100 * mine / wall,
                "server_cpu_pct": 100 * cpu / wall,
            }
        )
        print(
            f"  {proc.name} {level}: {idle[-1]['kib_per_connection']:.1f} KiB/conn, "
            f"{broadcast[-1]['cpu_us_per_delivery']:.2f} us/delivery, last receipt "
            f"{broadcast[-1]['last_receipt_ms_p50']:.1f} ms",
            flush=True,
        )
    return idle, broadcast, clients


async def targeted(
    proc: Proc,
    port: int,
    secret: str,
    prefix: str,
    pub: loadgen.Publisher,
    renderer: Renderer,
    fmt: str = "json",
) -> tuple[list[dict[str, Any]], list[loadgen.WsClient]]:
    """The open-loop rate ladder, one `fmt` socket per user, until a rate is not held."""
    hub = Hub()
    users = [f"{prefix}{i:06d}" for i in range(TARGET_USERS)]
    toks = tokens(secret, prefix, TARGET_USERS)
    clients = await loadgen.connect(hub, port, [f"/ws?format={fmt}&token={t}" for t in toks])
    await asyncio.sleep(1.0)
    # A JSON envelope of about 430 bytes; the html fragment (toast, row, badge) is larger.
    template = notification_template("y" * 230, renderer)
    chans = loadgen.channels(users)
    seqs = [0] * TARGET_USERS
    hub.track = True
    steps: list[dict[str, Any]] = []
    failed = False
    for rate in RATES:
        if failed and rate not in REQUIRED_RATES:
            continue
        hub.latencies_ns, base = [], hub.received
        total = int(rate * STEP_SECONDS)
        cpu0, mine0 = proc.cpu_seconds(), time.process_time()
        start = await loadgen.send_at(pub, template, users, chans, seqs, rate, total)
        wall = (time.monotonic_ns() - start) / 1e9
        cpu, mine = proc.cpu_seconds() - cpu0, time.process_time() - mine0
        await hub.wait(lambda base=base, total=total: hub.received >= base + total, 5)  # type: ignore[misc]
        lat = [x / 1e6 for x in hub.latencies_ns]
        lost = total - (hub.received - base)
        step = {
            "rate": rate,
            "sent": total,
            "lost": lost,
            "payload_bytes": hub.last_size,
            "p50_ms": pct(lat, 0.5) if lat else None,
            "p99_ms": pct(lat, 0.99) if lat else None,
            "p999_ms": pct(lat, 0.999) if lat else None,
            "cpu_us_per_delivery": cpu * 1e6 / total,
            "server_cpu_pct": 100 * cpu / wall,
            "loadgen_cpu_pct": 100 * mine / wall,
        }
        step["held"] = bool(lat) and lost == 0 and step["p99_ms"] <= P99_LIMIT_MS
        failed = failed or not step["held"]
        steps.append(step)
        print(
            f"  {proc.name} {fmt} {rate}/s: p50 {step['p50_ms']} p99 {step['p99_ms']} lost {lost} "
            f"server {step['server_cpu_pct']:.0f}% loadgen {step['loadgen_cpu_pct']:.0f}%",
            flush=True,
        )
        if lost:
            await hub.wait(lambda: False, 2)  # let a backlog drain before the next step
    return steps, clients


async def idle_at_max(proc: Proc, port: int, secret: str, prefix: str, held: int) -> dict[str, Any]:
    """Idle memory with MAX_SOCKETS open: `held` here, the rest in a helper process.

    One process may not hold many more than 19,000 client sockets under the open-file
    limit, so bench/clients.py opens what goes beyond the ladder's top level.
    """
    extra = MAX_SOCKETS - held
    toks = tokens(secret, prefix, extra)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "clients.py"),
        cwd=BENCH,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    mine0, wall0 = time.process_time(), time.monotonic()
    order = {"port": port, "paths": [f"/ws?format=html&token={t}" for t in toks]}
    child.stdin.write(json.dumps(order).encode() + b"\n")
    await child.stdin.drain()
    line = (await child.stdout.readline()).decode()
    if not line.startswith("ready"):
        child.kill()
        await child.wait()
        raise RuntimeError(f"{proc.name}: the helper could not open {extra} sockets")
    connect_s = float(line.split()[1])
    await asyncio.sleep(1.0)
    rss = proc.rss_kib()
    child.stdin.close()
    await child.wait()
    # The server closes the helper's sockets at its own pace: let it, before the next
    # scenario needs descriptors (it holds 19,000 of its 20,000 until then).
    drained = time.monotonic() + 120
    while proc.open_files() > held + 500 and time.monotonic() < drained:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return {
        "connections": MAX_SOCKETS,
        "rss_kib": rss,
        "extra_connect_per_s": extra / connect_s,
        "seconds": time.monotonic() - wall0,
        "parent_cpu_s": time.process_time() - mine0,
    }


async def settled(proc: Proc, busy: float = 0.05, longest: float = 60.0) -> None:
    """Wait until the server spends under `busy` of a core for half a second (or `longest`)."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = proc.cpu_seconds()
        await asyncio.sleep(0.5)
        if proc.cpu_seconds() - before < busy * 0.5:
            return


async def connects(proc: Proc, port: int, history_tokens: list[str]) -> dict[str, Any]:
    """Handshakes/s for users with a stored history: one at a time, then all at once."""
    out: dict[str, Any] = {}
    for name, n, batch in (
        ("sequential", CONNECT_SEQUENTIAL, 1),
        ("concurrent", CONNECT_CONCURRENT, CONNECT_CONCURRENT),
    ):
        hub = Hub()
        paths = [
            f"/ws?format=html&token={history_tokens[i % len(history_tokens)]}" for i in range(n)
        ]
        cpu0, mine0, started = proc.cpu_seconds(), time.process_time(), time.monotonic()
        clients = await loadgen.connect(hub, port, paths, batch=batch)
        wall = time.monotonic() - started
        cpu, mine = proc.cpu_seconds() - cpu0, time.process_time() - mine0
        out[name] = {
            "sockets": n,
            "per_s": n / wall,
            "server_cpu_ms_per_connect": cpu * 1000 / n,
            "loadgen_cpu_pct": 100 * mine / wall,
            "failed": hub.failed,
        }
        for c in clients:
            c.close()
        await asyncio.sleep(1.0)  # the server forgets them before the next round
        print(f"  {proc.name} connects, {name} {n}: {n / wall:,.0f}/s", flush=True)
    return out


async def one_run(
    name: str,
    rep: int,
    env: dict[str, str],
    tmp: Path,
    redis_port: int,
    renderer: Renderer,
    history_tokens: list[str],
) -> dict[str, Any]:
    proc, port = start_server(name, env, tmp)
    pub = await loadgen.publisher(redis_port)
    prefix = f"b{rep}{name[0]}{uuid.uuid4().hex[:6]}-"
    secret = env["JWT_SECRET"]
    try:
        idle, broadcast, held = await idle_and_broadcast(
            proc, port, secret, prefix + "i", renderer, pub
        )
        idle_max = None
        if MAX_SOCKETS > len(held) and rep < MAX_SOCKETS_REPS:
            idle_max = await idle_at_max(proc, port, secret, prefix + "m", len(held))
            idle_max["base_rss_kib"] = idle[0]["base_rss_kib"]
            idle_max["kib_per_connection"] = (
                idle_max["rss_kib"] - idle_max["base_rss_kib"]
            ) / MAX_SOCKETS
            print(
                f"  {proc.name} {MAX_SOCKETS}: {idle_max['kib_per_connection']:.1f} KiB/conn",
                flush=True,
            )
        by_format = {}
        for fmt in ("json", "html"):
            steps, clients = await targeted(
                proc, port, secret, f"{prefix}{fmt[0]}", pub, renderer, fmt
            )
            for c in clients:
                c.close()
            by_format[fmt] = steps
            await asyncio.sleep(1.0)
        for c in held:  # the idle sockets stay open through the targeted runs, as before
            c.close()
        # The handshakes are timed once the server has finished with the sockets that
        # closed and the backlog of the rates it could not hold, not beside that work.
        await settled(proc)
        handshakes = await connects(proc, port, history_tokens)
        return {
            "server": name,
            "rep": rep,
            "idle": idle,
            "idle_max": idle_max,
            "broadcast": broadcast,
            "targeted": by_format["json"],
            "targeted_html": by_format["html"],
            "max_rate_held": max_held(by_format["json"]),
            "max_rate_held_html": max_held(by_format["html"]),
            "rates_held": [s["rate"] for s in by_format["json"] if s["held"]],
            "connects": handshakes,
        }
    finally:
        pub.transport.close()
        proc.stop()


def max_held(steps: list[dict[str, Any]]) -> int:
    """The highest rate with every lower step held too."""
    best = 0
    for s in steps:
        if not s["held"]:
            break
        best = s["rate"]
    return best


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "ws": json.loads((BENCH / "peers/node-ws/node_modules/ws/package.json").read_text())[
            "version"
        ],
        "ioredis": json.loads(
            (BENCH / "peers/node-ws/node_modules/ioredis/package.json").read_text()
        )["version"],
    }


def seed_history_users(env: dict[str, str]) -> list[str]:
    """CONNECT_USERS users with CONNECT_HISTORY stored notifications each; their tokens."""
    from bson import ObjectId
    from pymongo import MongoClient, UpdateOne
    from seed import store_histories

    from notifier.notifications import state as user_state

    client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
    db = client.get_default_database()
    users = [str(ObjectId()) for _ in range(CONNECT_USERS)]
    from seed import known_users

    known_users(env["REDIS_URL"], users)
    store_histories(db, users, CONNECT_HISTORY, CONNECT_HISTORY * 2 // 3)
    # Every user has seen the announcements made before they signed up (create_user marks
    # it). Without a mark, each handshake after the broadcast scenario's announcements
    # looked for missed ones and wrote the mark (four queries, one a write, per connect).
    signed_up = {"$max": {"announcements_seen_at": datetime.now(UTC)}}
    db[user_state.COLLECTION].bulk_write([UpdateOne({"_id": u}, signed_up) for u in users])
    client.close()
    return [issue_token(env["JWT_SECRET"], u, "history", "shopper", 7200) for u in users]


async def measure(
    env: dict[str, str], tmp: Path, redis_port: int, history_tokens: list[str]
) -> list[dict[str, Any]]:
    renderer = Renderer()
    runs = []
    for rep in range(REPS):
        order = SERVERS if rep % 2 == 0 else SERVERS[::-1]  # interleaved, alternating first
        for name in order:
            print(f"rep {rep + 1}/{REPS}: {name}", flush=True)
            runs.append(await one_run(name, rep, env, tmp, redis_port, renderer, history_tokens))
    return runs


async def scale_scenarios(
    env: dict[str, str], tmp: Path, redis_port: int, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Issue 19's routing, scale-out, handshake ladder and memory after messages.

    A scenario that fails is recorded as {"error": ...} (its targets show as not met) and
    the suite goes on: one bad minute should not cost the whole run.
    """
    template = notification_template("y" * 230, Renderer())
    out: dict[str, Any] = {"routing": {}, "scale_out": {}, "memory": {}}
    loop = asyncio.get_running_loop()

    async def attempt(label: str, make: Callable[[], Any]) -> Any:
        try:
            return await make()
        except Exception as e:  # recorded in the results, and printed
            print(f"  {label} FAILED: {e!r}", flush=True)
            return {"error": repr(e)}

    for name in SERVERS:
        print(f"routing: {name}", flush=True)
        out["routing"][name] = await attempt(
            f"routing {name}",
            lambda name=name: scale.routing(name, env, tmp, redis_port, template, SCALE_SECONDS),
        )
    for name in SERVERS:
        print(f"scale-out: {name}", flush=True)
        out["scale_out"][name] = await attempt(
            f"scale-out {name}",
            lambda name=name: scale.scale_out(name, env, tmp, redis_port, template, SCALE_SECONDS),
        )
    print("handshake ladder: notifier", flush=True)
    out["ladder"] = await attempt(
        "ladder", lambda: loop.run_in_executor(None, scale.handshake_ladder, env, tmp, QUICK)
    )
    for fmt in ("html", "json"):
        out["memory"][fmt] = await attempt(
            f"memory {fmt}",
            lambda fmt=fmt: scale.memory_after_messages(
                env, tmp, redis_port, template, fmt, max(LEVELS)
            ),
        )
    return out


def main() -> None:
    import stack

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.monotonic()
    load_start = os.getloadavg()  # other work on the machine makes every figure noisier
    from servers import start_servers

    # As deployed: default settings (pings on), but for the per-address cap (one client host).
    tmp, env, servers = start_servers("bench")
    redis = servers[0]
    global REDIS_URL
    REDIS_URL = env["REDIS_URL"]
    try:
        redis_port = int(redis.url.rsplit(":", 1)[1])
        from pymongo import MongoClient
        from storm import run as run_storm

        from notifier.storage.schema import ensure_indexes

        client: MongoClient[dict[str, Any]] = MongoClient(env["MONGODB_URI"])
        ensure_indexes(client.get_default_database())
        client.close()
        history_tokens = seed_history_users(env)
        runs = asyncio.run(measure(env, tmp, redis_port, history_tokens))
        scaling = asyncio.run(scale_scenarios(env, tmp, redis_port, runs))
        try:
            storm = run_storm(
                start_server,
                env,
                tmp,
                STORM_SOCKETS,
                timeout=STORM_TIMEOUT,
                connect_budget=STORM_CONNECT_SECONDS,
                survivors=2,
            )
        except Exception as e:  # recorded: its target shows as not met
            print(f"  storm FAILED: {e!r}", flush=True)
            storm = {"error": repr(e)}
        try:
            scaling["live_first"] = scale.live_first(QUICK)  # its own servers and a worker
        except Exception as e:  # recorded: its target shows as not met
            print(f"  live first FAILED: {e!r}", flush=True)
            scaling["live_first"] = {"error": repr(e)}
        whole = stack.run(env, tmp, QUICK)
        import fanout

        earlier = os.environ.get("BENCH_FANOUT_FROM")  # a results file whose fan-out to keep
        fan: dict[str, Any] = {}
        if earlier:
            before = json.loads(Path(earlier).read_text())
            fan = {**before["fanout"], "reused_from": f"`make bench` of {before['date']}"}
        elif FANOUT:
            fan = fanout.run(QUICK)  # its own servers: 1 and 2 workers, up to 100,000 watchers
    finally:
        for s in servers:
            s.stop()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        # The BENCH_* settings this run was given, then the command.
        "command": " ".join(
            [
                *(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")),
                "make bench",
            ]
        ),
        "quick": QUICK,
        "machine": machine(),
        "config": {
            "reps": REPS,
            "levels": LEVELS,
            "max_sockets": MAX_SOCKETS,
            "connect_users": CONNECT_USERS,
            "connect_history": CONNECT_HISTORY,
            "connect_sequential": CONNECT_SEQUENTIAL,
            "connect_concurrent": CONNECT_CONCURRENT,
            "storm_sockets": STORM_SOCKETS,
            "storm_connect_seconds": STORM_CONNECT_SECONDS,
            "storm_survivor_processes": 2,
            "scale_seconds": SCALE_SECONDS,
            "settings": "defaults (WS_PING_INTERVAL 30: pings on) but CONNECTIONS_PER_ADDRESS",
            "max_sockets_reps": MAX_SOCKETS_REPS,
            "rates": RATES,
            "step_seconds": STEP_SECONDS,
            "target_users": TARGET_USERS,
            "p99_limit_ms": P99_LIMIT_MS,
            "server_core": 0,
            "loadgen_and_redis_core": 1,
        },
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "runs": runs,
        "scale": scaling,
        "storm": storm,
        "stack": whole,
        "fanout": fan,
        "seconds": time.monotonic() - started,
    }
    import report

    report.summarise(result)
    stem = f"{datetime.now(UTC):%Y-%m-%d}" + ("-quick" if QUICK else "")
    out = BENCH / "results" / f"{stem}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    report.write(out)
    print(f"wrote {out} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
