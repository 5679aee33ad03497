"""Many sockets on one host: 114,000 idle sockets across 6 web processes, pings on.

Issue 19's target: the web processes' total RSS <= 1.2 GB, and one announcement reaching
every socket in <= 1 s. Too long for `make bench` (the handshakes alone take minutes on
2 cores), so it runs on its own and merges its figures into a results file's `targets`:

    .venv/bin/python bench/many_sockets.py [--sockets 114000] [--processes 6]
        [--merge bench/results/<date>.json]   # add the row, rewrite the .md

Starts its own SecantusDB and redis-server, `python -m web` with WEB_CONCURRENCY
processes (default settings: pings on, every 30 s, which the clients answer), and one
helper process of clients (bench/clients.py) per source address 127.0.0.2-.9: a process
may hold 20,000 descriptors, and a (source, destination) pair has about 28,000 ephemeral
ports. Each socket is a different user. When all are open and the pings have gone round
once, the RSS of the web processes (the parent and its children) is read and one
announcement is published on the bus; the helpers report when their last socket had it.
"""

from __future__ import annotations

import argparse
import json
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
from handshake_ladder import close_helpers  # noqa: E402
from scale import cpu_ns, rss_kib, tree  # noqa: E402
from seed import known_users  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port  # noqa: E402

SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
PING_INTERVAL = 30.0  # the default WS_PING_INTERVAL


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def start_web(env: dict[str, str], procs: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "web"],
            cwd=ROOT,
            env={**env, "WEB_CONCURRENCY": str(procs)},
            stdout=out,
            stderr=out,
        )
    loadgen.wait_listening(web, log, procs, 90)
    return web


def open_helper(port: int, paths: list[str], source: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, str(BENCH / "clients.py")],
        cwd=BENCH,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    order = {"port": port, "paths": paths, "source": source, "strict": False}
    child.stdin.write(json.dumps(order).encode() + b"\n")
    child.stdin.flush()
    return child


def ask(helper: subprocess.Popen[bytes], line: str) -> str:
    assert helper.stdin is not None and helper.stdout is not None
    if line:
        helper.stdin.write(line.encode() + b"\n")
        helper.stdin.flush()
    return helper.stdout.readline().decode()


def run(sockets: int, procs: int) -> dict[str, Any]:
    from notifier.realtime import bus
    from notifier.realtime.render import PayloadRenderer

    tmp, env, servers = start_servers("many", PORT=str(free_port()))
    port = int(env["PORT"])
    web = None
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        web = start_web(env, procs, tmp / "web.log")
        prefix = uuid.uuid4().hex[:6]
        users = [f"many{prefix}{i:07d}" for i in range(sockets)]
        known_users(env["REDIS_URL"], users)
        secret = env["JWT_SECRET"]
        paths = [
            f"/ws?format=html&token={issue_token(secret, u, u, 'shopper', 7200)}" for u in users
        ]
        share = -(-sockets // len(SOURCES))
        print(f"opening {sockets:,} sockets from {len(SOURCES)} addresses...", flush=True)
        started = time.monotonic()
        for i, source in enumerate(SOURCES):
            helpers.append(open_helper(port, paths[i * share : (i + 1) * share], source))
        greeted = []
        for helper in helpers:
            line = ask(helper, "")
            if not line.startswith("ready"):
                raise SystemExit(f"a helper could not open its sockets: {line!r}")
            greeted.append(int(line.split()[2]))
        connect_s = time.monotonic() - started
        sockets = sum(greeted)  # a handful may not have been greeted within a minute
        print(f"  open in {connect_s:.0f} s ({sockets / connect_s:,.0f}/s)", flush=True)
        time.sleep(PING_INTERVAL + 2)  # every socket pinged (and answered) once
        pids = tree(web.pid)
        rss = rss_kib(pids)
        per_process = {pid: rss_kib([pid]) for pid in pids}
        # RSS counts the pages a child shares with the parent (copy-on-write) in each;
        # PSS splits them: the memory the processes really take together.
        pss = sum(pss_kib(pid) for pid in pids)
        fds = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in pids}
        announcement = {
            "id": uuid.uuid4().hex,
            "message": "Many sockets",
            "severity": "info",
            "created_at": "2026-01-01T00:00:00.000Z",
        }
        import redis

        client = redis.Redis.from_url(env["REDIS_URL"])
        event = bus.encode(PayloadRenderer().announcement_event(announcement))
        helper_pids = [helper.pid for helper in helpers]
        cpu_before = cpu_ns(pids), cpu_ns(helper_pids)
        sent = time.monotonic_ns()
        client.publish(bus.BROADCAST, event)
        client.close()
        lasts, reached = [], 0
        for helper, mine in zip(helpers, greeted, strict=True):
            line = ask(helper, f"wait {mine}")
            lasts.append(int(line.split()[1]))
            reached += int(line.split()[2])
        announcement_s = (max(lasts) - sent) / 1e9
        # Whether the announcement is bounded by CPU: what the web processes and the client
        # helpers ran meanwhile (read once every helper answered: a little after the last
        # socket had it), against the cores' seconds of the same window.
        web_cpu_s = (cpu_ns(pids) - cpu_before[0]) / 1e9
        clients_cpu_s = (cpu_ns(helper_pids) - cpu_before[1]) / 1e9
        window_s = (time.monotonic_ns() - sent) / 1e9
        result = {
            "sockets": sockets,
            "sockets_asked": len(paths),
            "processes": procs,
            "sources": SOURCES,
            "connect_s": connect_s,
            "rss_mb": rss / 1024,
            "pss_mb": pss / 1024,
            "rss_mb_per_process": sorted(round(v / 1024, 1) for v in per_process.values()),
            "open_files_per_process": sorted(fds.values()),
            "kib_per_socket": rss / sockets,
            "announcement_s": announcement_s,
            "announcement_reached": reached,
            "announcement_web_cpu_s": web_cpu_s,
            "announcement_clients_cpu_s": clients_cpu_s,
            "announcement_window_s": window_s,
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
        print(
            f"  {sockets:,} sockets, {procs} processes: RSS {result['rss_mb']:,.0f} MB (PSS "
            f"{result['pss_mb']:,.0f}), an "
            f"announcement reached all in {announcement_s:.2f} s (meanwhile web CPU "
            f"{web_cpu_s:.2f} s, clients {clients_cpu_s:.2f} s, in {window_s:.2f} s on "
            f"{os.cpu_count()} cores)",
            flush=True,
        )
        return result
    finally:
        close_helpers(helpers)
        if web is not None:
            web.send_signal(signal.SIGTERM)
            try:
                web.wait(60)
            except subprocess.TimeoutExpired:
                for pid in tree(web.pid):
                    os.kill(pid, signal.SIGKILL)
                web.wait()
        stop_servers(servers)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sockets", type=int, default=114_000)
    args.add_argument("--processes", type=int, default=6)
    args.add_argument("--merge", type=Path, help="a results .json to add the target row to")
    opts = args.parse_args()
    result = run(opts.sockets, opts.processes)
    print(json.dumps(result, indent=1))
    if opts.merge:
        import report

        data = json.loads(opts.merge.read_text())
        data.setdefault("scale", {})["many_sockets"] = {
            **result,
            "command": "bench/many_sockets.py "
            + " ".join(sys.argv[1:]).replace(str(opts.merge), opts.merge.name),
        }
        report.summarise(data)
        opts.merge.write_text(json.dumps(data, indent=1))
        report.write(opts.merge)
        print(f"merged into {opts.merge}")


if __name__ == "__main__":
    main()
