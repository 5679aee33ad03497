"""A helper process that holds WebSocket clients, for more sockets than one process's fds.

Reads one JSON line {"port", "paths", and optionally "source": a local address to connect
from, "strict": false to go on past sockets not greeted} on stdin, opens one socket per
path (each greeted), prints "ready <seconds> <greeted>", and
holds them until stdin closes. Each line "wait <n>" meanwhile waits until the sockets
received n messages in all and prints "got <monotonic ns of the last one> <received>".

    python bench/clients.py   # driven by bench/suite.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import loadgen


async def main() -> None:
    """Connect, report, hold until the parent closes stdin."""
    order = json.loads(sys.stdin.readline())
    hub = loadgen.Hub()
    started = time.monotonic()
    clients = await loadgen.connect(
        hub,
        order["port"],
        order["paths"],
        source=order.get("source"),
        strict=order.get("strict", True),
    )
    print(f"ready {time.monotonic() - started:.3f} {hub.greeted}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.startswith("wait "):
            want = int(line.split()[1])
            await hub.wait(lambda want=want: hub.received >= want, 120)  # type: ignore[misc]
            print(f"got {hub.last_ns} {hub.received}", flush=True)
    for c in clients:
        c.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
