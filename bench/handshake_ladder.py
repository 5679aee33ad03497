"""The handshake rate as a web process fills up: 1,000 sockets, then on to 19,000.

Starts its own redis-server and SecantusDB, one `python -m web` (default settings: pings
on; pinned to core 0 when --pin), and helper processes of WebSocket clients
(bench/clients.py, each holding its sockets; pinned to core 1). It opens the sockets in
steps of --step, each step a helper of its own, and records how fast each step
connected, with the server's CPU per handshake. Every socket is a different user (with
a cached token version, like a user who logged in), so each handshake subscribes a new
user channel and reads a state document.

    .venv/bin/python bench/handshake_ladder.py [--top 19000] [--step 1000] [--code DIR]
        [--py-spy OUT.svg]   # profile the web process over the whole ladder
"""

from __future__ import annotations

import argparse
import json
import os
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


def open_step(port: int, paths: list[str], pin: bool) -> tuple[subprocess.Popen[bytes], float]:
    """A helper holding one socket per path; returns it and the seconds it took."""
    argv = [sys.executable, str(BENCH / "clients.py")]
    if pin:
        argv = ["taskset", "-c", "1", *argv]
    child = subprocess.Popen(argv, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps({"port": port, "paths": paths}).encode() + b"\n")
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
            cpu0 = cpu_seconds(web.pid)
            helper, seconds = open_step(port, some, opts.pin)
            helpers.append(helper)
            cpu = cpu_seconds(web.pid) - cpu0
            step = {
                "open_before": start,
                "sockets": len(some),
                "per_s": len(some) / seconds,
                "server_cpu_ms_per_handshake": cpu * 1000 / len(some),
                "rss_kib_per_socket": (rss_kib(web.pid) - base_rss) / (start + len(some)),
            }
            steps.append(step)
            print(
                f"  {start:>6,} open: {step['per_s']:,.0f}/s, "
                f"{step['server_cpu_ms_per_handshake']:.2f} ms CPU each, "
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
    return steps


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--top", type=int, default=19_000)
    args.add_argument("--step", type=int, default=1_000)
    args.add_argument("--code", type=Path, default=ROOT, help="the tree `python -m web` runs")
    args.add_argument("--pin", action="store_true", help="server on core 0, clients on core 1")
    args.add_argument("--py-spy", help="write py-spy's raw profile of the web process here")
    args.add_argument("--spy-from", type=int, default=0, help="profile from this many sockets")
    opts = args.parse_args()
    steps = ladder(opts)
    first, last = steps[0]["per_s"], steps[-1]["per_s"]
    print(f"last step / first step: {last / first:.2f}")


if __name__ == "__main__":
    main()
