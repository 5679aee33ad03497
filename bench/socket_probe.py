"""`python -m web` with instruments, for bench/socket_memory.py (never used in production).

It times every garbage collection (gc.callbacks) and, with PROBE_TRACEMALLOC=1, traces
allocations. SIGUSR1 writes a report to $PROBE_REPORT: the collections so far and, when
tracing, what grew since the previous report, by line.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORT = Path(os.environ["PROBE_REPORT"])
TRACE = os.environ.get("PROBE_TRACEMALLOC") == "1"
pauses: list[tuple[int, float]] = []  # (generation, ms) of each collection
_started: list[float] = [0.0]
_snapshots: list[tracemalloc.Snapshot] = []


def on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        pauses.append((info["generation"], (time.perf_counter() - _started[0]) * 1000))


def report(signum: int, frame: FrameType | None) -> None:
    out: dict[str, Any] = {"pauses": pauses[:]}
    if TRACE:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if _snapshots:  # what grew since the last report, by line
            stats = snapshot.compare_to(_snapshots[-1], "lineno")
            out["grown"] = [
                (s.traceback[0].filename, s.traceback[0].lineno, s.size_diff, s.count_diff)
                for s in stats
            ]
        _snapshots[:] = [snapshot]
    tmp = REPORT.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.rename(REPORT)  # the bench waits for the file; it must appear whole


if __name__ == "__main__":
    if TRACE:
        tracemalloc.start(1)
    gc.callbacks.append(on_gc)
    # PROBE_SKIP=release,stream,freeze turns trims off, to measure each one alone.
    skip = set(filter(None, os.environ.get("PROBE_SKIP", "").split(",")))
    sys.path.insert(0, str(ROOT))
    if "release" in skip:
        import web.handlers.ws

        web.handlers.ws.release_handshake = lambda handler: None  # type: ignore[assignment]
    if "stream" in skip:
        import web.lean

        web.lean.lazy_stream_buffers = lambda: None
    if "freeze" in skip:
        gc.freeze = lambda: None
    signal.signal(signal.SIGUSR1, report)
    runpy.run_module("web", run_name="__main__", alter_sys=True)
