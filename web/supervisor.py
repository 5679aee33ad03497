"""WEB_CONCURRENCY web processes on one port (SO_REUSEPORT), and their parent.

`supervise` forks that many children, each a whole web process listening on the port
with SO_REUSEPORT: the kernel spreads new connections evenly over them by address hash (a
listening socket they all shared would let whichever process wakes first take a burst,
and run out of its open-file limit while the others idle). They are forked from a
process that imported the whole web app, so they start at once and share those pages;
then the parent replaces itself with this module (exec, same pid: the children stay its
children), `python -m web.supervisor`, which imports next to nothing: it holds 12 MB
instead of the 52 MB of an app it never runs (issue 19: the RSS of every web process
counts). So the app is imported inside the functions that run before the exec or in a
child, never at the top of this module.

The parent forwards SIGTERM and SIGINT to every child, each closes its sockets with 1012
and exits, and the parent exits once they all have; a child that dies on its own is
started again (it imports the app itself, a second or so), and one that keeps dying
stops them all. SIGTERM and SIGINT are blocked from the first fork to the exec'd
module's handlers (a signal mask survives exec), and while a child is started again
(until its pid is one the handler signals): one that comes meanwhile waits.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from notifier import logs

if TYPE_CHECKING:
    from notifier.settings import Settings

log = logging.getLogger("web")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
RESTARTS_PER_MINUTE = 5  # a child that dies more often than this stops the whole group


def supervise(config: Settings, remove_metrics_dir: bool = False) -> int:
    """Fork config.web_concurrency web processes on one port; wait for them (exec first).

    `remove_metrics_dir`: config.metrics_dir is removed at exit.
    """
    import gc

    from tornado.netutil import bind_sockets

    import web.serve  # noqa: F401 (the app, imported before the forks: the children share it)

    try:  # a port someone else holds: one line now, not children failing in turn
        for sock in bind_sockets(config.port, reuse_port=True):
            sock.close()
    except OSError as e:
        print(f"notifier: cannot serve on port {config.port}: {e.strerror or e}", file=sys.stderr)
        return 1

    child = functools.partial(serve_child, config)
    # What this process imported stays shared with the children: their collections skip
    # frozen objects, so they do not write to (copy) those pages. At 6 children, PSS 189 ->
    # 134 MiB; RSS, which counts shared pages in each process, is the same.
    gc.freeze()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until watch()
    children = {start_child(child): index for index in range(config.web_concurrency)}
    # Before the handover, as before it: whoever reads the log sees this line first.
    log.info("supervising %d web processes on port %d", len(children), config.port)
    metrics_dir = config.metrics_dir
    handover(children, config.production, metrics_dir, remove_metrics_dir)
    # The exec failed: this process watches them.
    return watch(children, lambda _: start_child(child), metrics_dir)


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
        # Blocked while the child is forked and not yet in `children`: a stop meanwhile
        # would miss it, and this would wait for it for ever. The child unblocks them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            children[restart(index)] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return status


def serve_child(config: Settings | None = None) -> int:
    """A child's work: serve the port. One restarted by `python -m web.supervisor` has no
    `config`: it reads the settings and imports the app itself."""
    from notifier.dev.embedded import die_with_parent
    from notifier.settings import Settings
    from web.serve import serve

    die_with_parent()
    return serve(config or Settings.from_env(), reuse_port=True)


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
        status = watch(children, lambda _: start_child(serve_child), metrics_dir)
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
