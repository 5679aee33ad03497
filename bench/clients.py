"""A helper process that holds WebSocket clients, for more sockets than one process's fds.

Reads one JSON line {"port", "paths"} on stdin, opens one socket per path (each greeted),
prints "ready <seconds>", and holds them until stdin closes.

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
    clients = await loadgen.connect(hub, order["port"], order["paths"])
    print(f"ready {time.monotonic() - started:.3f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for c in clients:
        c.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
