"""The parent of WEB_CONCURRENCY web processes once they run: it waits, restarts, stops.

web/serve.py's `supervise` forks the children from a process that imported the whole web
app, so that they start at once and share those pages, then replaces itself with this
module (exec, same pid: the children stay its children). It imports next to nothing, so
the parent holds 12 MB instead of the 52 MB of an app it never runs (issue 19: the RSS of
every web process counts). A child that dies is started again from here: it imports the
app itself (a second or so).

SIGTERM and SIGINT are blocked across the exec (a signal mask survives it): one that
comes meanwhile waits for this module's handlers instead of killing the parent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable

from notifier import logs

log = logging.getLogger("web")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
RESTARTS_PER_MINUTE = 5  # a child that dies more often than this stops the whole group


def start_child(run: Callable[[], int]) -> int:
    """Fork a child that runs `run` and exits with its status; the child's pid."""
    pid = os.fork()
    if pid == 0:  # the child: a web process of its own, until told to stop
        status = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            status = run()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    return pid


def watch(children: dict[int, int], restart: Callable[[int], int], metrics_dir: str | None) -> int:
    """Wait for the children (pid -> index), start again one that dies; the exit status.

    SIGTERM and SIGINT are forwarded to every child; once they all exited, so does this.
    """
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    deaths: list[float] = []
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        if metrics_dir:
            from prometheus_client import multiprocess  # here: only when a child died

            multiprocess.mark_process_dead(pid, metrics_dir)
        if stopping:
            continue
        deaths = [t for t in deaths if time.monotonic() - t < 60] + [time.monotonic()]
        log.error("web process %d (pid %d) exited (%s)", index, pid, _status(code))
        if len(deaths) > RESTARTS_PER_MINUTE:
            log.error("web processes keep exiting: stopping them all")
            status = 1
            stop(signal.SIGTERM, None)
            continue
        children[restart(index)] = index
    return status


def serve_from_env() -> int:
    """A restarted child's work: read the settings, import the app, serve the port."""
    from notifier.dev.embedded import die_with_parent
    from notifier.settings import Settings
    from web.serve import serve

    die_with_parent()
    return serve(Settings.from_env(), reuse_port=True)


def handover(
    children: dict[int, int], production: bool, metrics_dir: str | None, remove: bool
) -> None:
    """Replace this process with `python -m web.supervisor` watching `children`.

    Returns only if the exec failed (OSError logged): the caller then watches them itself.
    Call with STOP_SIGNALS blocked.
    """
    order = {
        "children": children,
        "production": production,
        "metrics_dir": metrics_dir,
        "remove_metrics_dir": remove,
    }
    argv = [sys.executable, "-m", "web.supervisor", json.dumps(order)]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 (our own interpreter and module)
    except OSError as e:
        log.warning("supervising from the web app's process (%s)", e)


def main() -> None:
    """`python -m web.supervisor ORDER`, as `handover` runs it."""
    order = json.loads(sys.argv[1])
    logs.configure(order["production"])
    children = {int(pid): index for pid, index in order["children"].items()}
    metrics_dir = order["metrics_dir"]
    try:
        status = watch(children, lambda _: start_child(serve_from_env), metrics_dir)
    finally:
        if order["remove_metrics_dir"]:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(status)


def _status(code: int) -> str:
    if os.WIFSIGNALED(code):
        return f"signal {os.WTERMSIG(code)}"
    return f"status {os.WEXITSTATUS(code)}"


if __name__ == "__main__":
    main()
