"""Memory per idle WebSocket in one web process, and the GC pauses of a connect storm.

Starts SecantusDB and redis-server (notifier.dev.embedded), then `python -m web` through
bench/socket_probe.py (which times every garbage collection), opens WARMUP sockets, reads
VmRSS, opens N more (a few hundred handshakes in flight at once), lets the process
settle, reads VmRSS again and reports (after - before) / N. Each socket reads its greeting
and then only answers pings, as an idle browser tab would. Four sockets per user.

    .venv/bin/python bench/socket_memory.py [N ...]          # e.g. 2000 5000
    .venv/bin/python bench/socket_memory.py --trace 2000     # + tracemalloc's top lines
    .venv/bin/python bench/socket_memory.py --skip stream 2000  # one trim off (see the probe)

Each N runs against a fresh web process. --trace slows the process and grows its RSS; its
per-line numbers are Python allocations, the RSS figure is the one to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seed import known_users  # noqa: E402
from servers import start_servers, stop_servers  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.dev.embedded import free_port, stop  # noqa: E402

WARMUP = 100
IN_FLIGHT = 200  # handshakes at once (the listen backlog is 128 per process)
SOCKETS_PER_USER = 4
SETTLE = 2.0


def rss_kib(pid: int) -> int:
    """The process's resident set, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class IdleSocket:
    """A raw client socket: handshake, the greeting, then pongs only."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, token: str) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET /ws?format=json&token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
        opcode, payload = await read_frame(reader)
        assert opcode == 1 and json.loads(payload)["type"] == "connection-established", payload
        self.task = asyncio.create_task(self._answer_pings(reader))

    async def _answer_pings(self, reader: asyncio.StreamReader) -> None:
        assert self.writer is not None
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 9:  # ping -> a masked pong with the same payload
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 8:
                return

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(length)


async def open_many(port: int, tokens: list[str]) -> tuple[list[IdleSocket], float]:
    """Open a socket per token, IN_FLIGHT handshakes at a time; returns them and the seconds."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    socks = [IdleSocket() for _ in tokens]

    async def one(sock: IdleSocket, token: str) -> None:
        async with gate:
            await asyncio.wait_for(sock.open(port, token), 60)

    started = time.monotonic()
    await asyncio.gather(*(one(s, t) for s, t in zip(socks, tokens, strict=True)))
    return socks, time.monotonic() - started


def probe_report(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """Ask the probe for its report (SIGUSR1) and wait for the file."""
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the probe did not report")
        time.sleep(0.05)
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def top_lines(grown: list[list[Any]], n: int, count: int = 25) -> list[str]:
    """tracemalloc's biggest growths by line, per socket."""
    total = sum(size for _, _, size, _ in grown)
    lines = [f"  python allocations: {total / n / 1024:.2f} KiB per socket"]
    for filename, lineno, size, objects in grown[:count]:
        name = filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        lines.append(f"  {size / n:8.0f} B  {objects / n:5.1f} obj  {name}:{lineno}")
    return lines


def start_probe(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m web` under bench/socket_probe.py, its output to log_path."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "socket_probe.py")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )


async def measure(
    env: dict[str, str], n: int, trace: bool, tmp: Path, secret: str
) -> dict[str, Any]:
    port = free_port()
    report_path = tmp / f"probe-{n}.json"
    env = {
        **env,
        "PORT": str(port),
        "BASE_URL": f"http://127.0.0.1:{port}",
        "PROBE_REPORT": str(report_path),
        "PROBE_TRACEMALLOC": "1" if trace else "0",
    }
    log_path = tmp / f"web-{n}.log"
    proc = start_probe(env, log_path)
    try:
        deadline = time.monotonic() + 30
        while b"listening on port" not in log_path.read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the web process did not start; see {log_path}")
            await asyncio.sleep(0.1)
        users = [str(ObjectId()) for _ in range((WARMUP + n) // SOCKETS_PER_USER + 1)]
        known_users(env["REDIS_URL"], users)
        tokens = [
            issue_token(secret, users[i // SOCKETS_PER_USER], f"u{i}", "shopper", 3600)
            for i in range(WARMUP + n)
        ]
        warm, _ = await open_many(port, tokens[:WARMUP])
        await asyncio.sleep(SETTLE)
        before_report = probe_report(proc, report_path)
        before = rss_kib(proc.pid)
        storm, seconds = await open_many(port, tokens[WARMUP:])
        await asyncio.sleep(SETTLE)
        after_report = probe_report(proc, report_path)
        after = rss_kib(proc.pid)
        storm_pauses = after_report["pauses"][len(before_report["pauses"]) :]
        full = [ms for gen, ms in storm_pauses if gen == 2]
        result: dict[str, Any] = {
            "sockets": n,
            "connect_seconds": round(seconds, 2),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "kib_per_socket": round((after - before) / n, 2),
            "gc_collections": len(storm_pauses),
            "gc_full_collections": len(full),
            "gc_full_max_ms": round(max(full, default=0.0), 1),
            "gc_full_total_ms": round(sum(full), 1),
            "gc_any_max_ms": round(max((ms for _, ms in storm_pauses), default=0.0), 1),
        }
        if trace:
            result["top"] = top_lines(after_report["grown"], n)
        for sock in warm + storm:
            sock.close()
        return result
    finally:
        stop(proc, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sockets", nargs="*", type=int, default=[2000])
    parser.add_argument("--trace", action="store_true", help="tracemalloc's top lines too")
    parser.add_argument("--skip", default="", help="trims to turn off: release,stream,freeze")
    args = parser.parse_args()
    tmp, env, servers = start_servers("sockets", PROBE_SKIP=args.skip)
    secret = env["JWT_SECRET"]
    try:
        for n in args.sockets:
            result = asyncio.run(measure(env, n, args.trace, tmp, secret))
            top = result.pop("top", [])
            print(json.dumps(result), flush=True)
            for line in top:
                print(line, flush=True)
    finally:
        stop_servers(servers)


if __name__ == "__main__":
    main()
