"""Private MongoDB-protocol (SecantusDB) and Redis servers for development and tests.

SecantusDB is GPL-2.0, so it is only ever run as its own process and spoken to over
the wire protocol; nothing here imports it.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from notifier.errors import ServerError


@dataclass
class Server:
    """A child server process and the URL to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and wait for it (kill it if it lingers)."""
        stop(self.process, timeout)


def stop(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM a process and wait up to `grace` seconds for it; then SIGKILL it."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def database_uri(server: Server, database: str) -> str:
    """The MONGODB_URI of a database on an embedded SecantusDB, retryable writes off.

    SecantusDB scans its registry of retryable writes (30 minutes of them) on every write
    and sorts it past 10,000 entries: under load that was most of its time (78.5% at
    10,000 sockets connecting, and a tax on every write of a deal check's fan-out). The
    writes that matter are idempotent without it (deterministic ids, the told-once and
    (user, seq) indexes); a MONGODB_URI you give keeps the driver's default (on).
    """
    return f"{server.url}/{database}?retryWrites=false"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(ServerError):
    """The server could not bind its port: another process took it."""


def on_a_free_port(start: Callable[[int], Server], port: int | None) -> Server:
    """`start(port)`, or on a free port: one taken by another process between the pick and
    the bind (runs side by side pick ports at once) is picked again, up to three times."""
    if port is not None:
        return start(port)
    for _ in range(2):
        try:
            return start(free_port())
        except PortTaken:
            continue
    return start(free_port())


def die_with_parent() -> None:
    """In the child: receive SIGTERM when the parent dies, so no server outlives its runner."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(name: str, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = log_path.open("ab")
    with log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches the app processes, not the
            # servers they need to shut down cleanly; the runner stops the servers last.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _wait_ready(server: Server, ready: Callable[[], bool], timeout: float) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            error = PortTaken if "Address already in use" in tail else ServerError
            raise error(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        if ready():
            return server
        time.sleep(0.05)
    server.stop()
    raise ServerError(f"{server.name} did not answer within {timeout:.0f}s; see {server.log_path}")


def start_mongo(
    data_dir: Path, log_path: Path, port: int | None = None, test_commands: bool = False
) -> Server:
    """Start SecantusDB (`secantusd-py`) with its data in data_dir; returns when it answers.

    `test_commands` enables configureFailPoint (for tests that inject faults only).
    """
    exe = Path(sys.executable).with_name("secantusd-py")
    binary = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if binary is None:
        raise ServerError("secantusd-py is missing: pip install 'SecantusDB>=0.7.0b3,<0.8'")
    data_dir.mkdir(parents=True, exist_ok=True)

    def start(port: int) -> Server:
        argv = [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data_dir)]
        if test_commands:
            argv.append("--enable-test-commands")
        url = f"mongodb://127.0.0.1:{port}"
        server = Server("secantusd", _spawn("secantusd", argv, log_path), url, log_path)

        def ready() -> bool:
            client: MongoClient[dict[str, object]] = MongoClient(
                server.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250
            )
            try:
                client.admin.command("ping")
                return True
            except PyMongoError:
                return False
            finally:
                client.close()

        return _wait_ready(server, ready, 60)

    return on_a_free_port(start, port)


def start_redis(
    data_dir: Path, log_path: Path, port: int | None = None, extra: tuple[str, ...] = ()
) -> Server:
    """Start a private redis-server with its data (AOF) in data_dir; returns when it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server is missing: apt-get install redis-server, or set REDIS_URL")
    data_dir.mkdir(parents=True, exist_ok=True)
    return on_a_free_port(lambda port: _start_redis(binary, data_dir, log_path, port, extra), port)


def _start_redis(
    binary: str, data_dir: Path, log_path: Path, port: int, extra: tuple[str, ...]
) -> Server:
    argv = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        *extra,
    ]
    process = _spawn("redis-server", argv, log_path)
    server = Server("redis-server", process, f"redis://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        client = redis.Redis.from_url(server.url, socket_timeout=0.25)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    return _wait_ready(server, ready, 30)


def start_redis_cluster(data_dir: Path, nodes: int = 3) -> list[Server]:
    """Start `nodes` redis-servers on loopback and join them into a cluster (no replicas).

    Returns when every node reports cluster_state:ok; the first node's URL reaches it.
    """
    servers: list[Server] = []
    try:
        for n in range(nodes):
            node_dir = data_dir / f"node{n}"
            # The cluster bus port is given, else it would be the port + 10000 (often > 65535).
            servers.append(
                start_redis(
                    node_dir,
                    data_dir / f"node{n}.log",
                    extra=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ),
                )
            )
        addresses = [s.url.removeprefix("redis://") for s in servers]
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            output = created.stdout + created.stderr
            raise ServerError(f"redis-cli --cluster create failed:\n{output}")

        def all_ok() -> bool:
            for server in servers:
                client = redis.Redis.from_url(server.url, socket_timeout=0.5)
                try:
                    info = client.execute_command("CLUSTER INFO")  # parsed into a dict
                    if str(info.get("cluster_state")) != "ok":
                        return False
                except (redis.RedisError, OSError):
                    return False
                finally:
                    client.close()
            return True

        _wait_ready(servers[0], all_ok, 30)
        return servers
    except BaseException:
        for server in servers:
            server.stop()
        raise


def worker_argv(
    pool: str = "threads", concurrency: int = 4, loglevel: str = "INFO", name: str | None = None
) -> list[str]:
    """The command line of a Celery worker as tests and benchmarks start one (Procfile's, in
    this Python, without the start-up chatter between workers)."""
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", f"--pool={pool}"]
    if pool == "threads":
        argv.append(f"--concurrency={concurrency}")
    argv += [f"--loglevel={loglevel}", "--without-mingle", "--without-gossip"]
    return argv + (["-n", name] if name else [])
