"""The handshake rate as a web process fills up: 1,000 sockets, then on to 19,000.

Starts its own redis-server and SecantusDB, one `python -m web` (default settings: pings
on; pinned to core 0 when --pin), and helper processes of WebSocket clients
(bench/clients.py, each holding its sockets; pinned to core 1; each connecting from an
address of its own, 127.0.0.2-.9 in turn: see SOURCES). It opens the sockets in
steps of --step, each step a helper of its own, and records how fast each step
connected, with the CPU per handshake of the server, of all the helpers together (they
answer the server's pings for every socket they hold), of Redis and of SecantusDB, and how
busy each core was. Every socket is a different user (with
a cached token version, like a user who logged in), so each handshake subscribes a new
user channel and reads a state document.

    .venv/bin/python bench/handshake_ladder.py [--top 19000] [--step 1000] [--code DIR]
        [--py-spy OUT.txt] [--spy-from N]  # py-spy's raw profile of the web process
        [--one-address]  # every helper from 127.0.0.1, as before 2026-12-06
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from seed import known_users  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import database_uri, free_port, start_mongo, start_redis  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Each helper connects from an address of its own, in turn. From one address to one port,
# Linux finds a free ephemeral port cheaply only while under half the range is in use
# (32768-60999: about 14,100); past that each connect() searches it, 0.7-1.1 ms of the
# client's system CPU at 14,000-18,000 open against 0.02-0.03 ms below, and the ladder
# measured its helpers, not the server (251/s at 18,000-19,000 on 2026-12-06).
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]


def cpu_seconds(pid: int, system_only: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user = 0 if system_only else int(fields[11])
    return (user + int(fields[12])) / CLK_TCK  # utime + stime


def core_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core so far, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out.append((sum(ticks) - idle, sum(ticks)))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_web(code: Path, env: dict[str, str], log: Path, pin: bool) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "web"]
    if pin:
        argv = ["taskset", "-c", "0", *argv]
    with log.open("wb") as out:
        web = subprocess.Popen(argv, cwd=code, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while b"subscribed to" not in log.read_bytes():
        if web.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the web process did not start; see {log}")
        time.sleep(0.05)
    return web


def open_step(
    port: int, paths: list[str], pin: bool, source: str | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    """A helper holding one socket per path (connected from `source`, an address such as
    127.0.0.5, when given); returns it and the seconds it took."""
    argv = [sys.executable, str(BENCH / "clients.py")]
    if pin:
        argv = ["taskset", "-c", "1", *argv]
    child = subprocess.Popen(argv, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    order = {"port": port, "paths": paths, **({"source": source} if source else {})}
    child.stdin.write(json.dumps(order).encode() + b"\n")
    child.stdin.flush()
    line = child.stdout.readline().decode()
    if not line.startswith("ready"):
        child.kill()
        raise SystemExit(f"a helper could not open {len(paths)} sockets: {line!r}")
    return child, float(line.split()[1])


def close_helpers(helpers: list[subprocess.Popen[bytes]]) -> None:
    """Let every helper of open_step close its sockets and exit (killed after a minute)."""
    for helper in helpers:
        if helper.stdin is not None:
            helper.stdin.close()
    for helper in helpers:
        try:
            helper.wait(60)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def ladder(opts: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="notifier-ladder-"))
    mongo = start_mongo(tmp / "mongo", tmp / "mongo.log")
    redis = start_redis(tmp / "redis", tmp / "redis.log")
    port, secret = free_port(), "bench-" + uuid.uuid4().hex * 2
    env = {
        **os.environ,
        "MONGODB_URI": database_uri(mongo, "bench"),
        "REDIS_URL": redis.url + "/0",
        "JWT_SECRET": secret,
        "PORT": str(port),
        "VAR_DIR": str(tmp),
        "CONNECTIONS_PER_ADDRESS": "0",  # every client is on 127.0.0.1
    }
    prefix = uuid.uuid4().hex[:6]
    users = [f"ladder{prefix}{i:06d}" for i in range(opts.top)]
    known_users(env["REDIS_URL"], users)
    paths = [f"/ws?format=json&token={issue_token(secret, u, u, 'shopper', 7200)}" for u in users]
    web = start_web(opts.code, env, tmp / "web.log", opts.pin)
    spy = None
    helpers: list[subprocess.Popen[bytes]] = []
    steps: list[dict[str, Any]] = []
    base_rss = rss_kib(web.pid)
    try:
        for start in range(0, opts.top, opts.step):
            if opts.py_spy and spy is None and start >= opts.spy_from:
                spy = subprocess.Popen(
                    [
                        *(str(Path(sys.executable).with_name("py-spy")), "record"),
                        *("-o", opts.py_spy, "-f", "raw", "-r", "200", "--nonblocking"),
                        *("-p", str(web.pid)),
                    ]
                )
            some = paths[start : start + opts.step]
            others = {"redis": redis.process.pid, "mongo": mongo.process.pid}
            before = {name: cpu_seconds(pid) for name, pid in others.items()}
            held0 = sum(cpu_seconds(h.pid) for h in helpers)
            cpu0, cores0 = cpu_seconds(web.pid), core_busy()
            source = None if opts.one_address else SOURCES[len(helpers) % len(SOURCES)]
            helper, seconds = open_step(port, some, opts.pin, source)
            cpu, cores1 = cpu_seconds(web.pid) - cpu0, core_busy()
            # The new helper's whole life is this step; the others' CPU is their pongs.
            held = sum(cpu_seconds(h.pid) for h in helpers) - held0
            new, new_system = cpu_seconds(helper.pid), cpu_seconds(helper.pid, system_only=True)
            helpers.append(helper)
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in others.items()}
            busy = [
                100 * (b1 - b0) / max(1, t1 - t0)
                for (b0, t0), (b1, t1) in zip(cores0, cores1, strict=True)
            ]
            step = {
                "open_before": start,
                "sockets": len(some),
                "per_s": len(some) / seconds,
                "server_cpu_ms_per_handshake": cpu * 1000 / len(some),
                "server_cpu_pct": 100 * cpu / seconds,
                "new_helper_cpu_ms_per_handshake": new * 1000 / len(some),
                "new_helper_system_ms_per_handshake": new_system * 1000 / len(some),
                "held_helpers_cpu_pct": 100 * held / seconds,
                "redis_cpu_ms_per_handshake": spent["redis"] * 1000 / len(some),
                "mongo_cpu_ms_per_handshake": spent["mongo"] * 1000 / len(some),
                "cores_busy_pct": busy,
                "rss_kib_per_socket": (rss_kib(web.pid) - base_rss) / (start + len(some)),
            }
            steps.append(step)
            print(
                f"  {start:>6,} open: {step['per_s']:,.0f}/s, "
                f"server {step['server_cpu_ms_per_handshake']:.2f} ms CPU each "
                f"({step['server_cpu_pct']:.0f}% of a core), "
                f"new helper {step['new_helper_cpu_ms_per_handshake']:.2f} ms each "
                f"({step['new_helper_system_ms_per_handshake']:.2f} system), "
                f"held helpers {step['held_helpers_cpu_pct']:.0f}% of a core, "
                f"redis {step['redis_cpu_ms_per_handshake']:.2f} ms, "
                f"mongo {step['mongo_cpu_ms_per_handshake']:.2f} ms; "
                f"cores busy {', '.join(f'{b:.0f}%' for b in busy)}; "
                f"{step['rss_kib_per_socket']:.1f} KiB/socket",
                flush=True,
            )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            spy.wait()
        close_helpers(helpers)
        web.terminate()
        web.wait(60)
        redis.stop()
        mongo.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return steps


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--top", type=int, default=19_000)
    args.add_argument("--step", type=int, default=1_000)
    args.add_argument("--code", type=Path, default=ROOT, help="the tree `python -m web` runs")
    args.add_argument("--pin", action="store_true", help="server on core 0, clients on core 1")
    args.add_argument("--py-spy", help="write py-spy's raw profile of the web process here")
    args.add_argument("--spy-from", type=int, default=0, help="profile from this many sockets")
    args.add_argument(
        "--one-address", action="store_true", help="every helper from 127.0.0.1 (as before)"
    )
    opts = args.parse_args()
    steps = ladder(opts)
    # The issue's measure: the step from top-step open against the second (1,000-2,000).
    low, high = steps[min(1, len(steps) - 1)]["per_s"], steps[-1]["per_s"]
    print(f"last step / second step: {high / low:.2f}")


if __name__ == "__main__":
    main()
