"""`make run`: embedded MongoDB and Redis (unless given), demo data, then web + worker + beat."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import MongoClient

from notifier.dev.embedded import (
    Server,
    ServerError,
    database_uri,
    die_with_parent,
    start_mongo,
    start_redis,
    stop,
)
from notifier.dev.seed import seed
from notifier.migrations import migrate
from notifier.settings import ConfigurationError, Settings
from notifier.storage.schema import ensure_indexes

DEMO_FEED_INTERVAL = "8"
DEAL_CHECK_INTERVAL = "10"


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - the same address the web process binds
        except OSError:
            return True
    return False


def main() -> int:
    """Start everything, wait for Ctrl-C or SIGTERM, stop everything."""
    env = dict(os.environ)
    var = Path(env.get("VAR_DIR", "var")).resolve()
    var.mkdir(parents=True, exist_ok=True)
    env["VAR_DIR"] = str(var)  # absolute, for every process (Procfile.dev uses it too)
    env.setdefault("DEMO_FEED_INTERVAL", DEMO_FEED_INTERVAL)
    env.setdefault("DEAL_CHECK_INTERVAL", DEAL_CHECK_INTERVAL)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    port = int(env.setdefault("PORT", "8888"))
    # honcho gives each process type its own PORT (web 8888, worker 8988, ...): links in
    # emails must name the web's.
    env.setdefault("BASE_URL", f"http://localhost:{port}")
    if _port_taken(port):
        print(f"notifier: port {port} is in use; run with another, e.g. PORT=8890 make run")
        return 1

    servers: list[Server] = []
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs: subprocess.Popen[bytes] | None = None
    try:
        if not env.get("MONGODB_URI"):
            servers.append(start_mongo(var / "mongo", var / "log" / "mongo.log"))
            env["MONGODB_URI"] = database_uri(servers[-1], "notifier")
        if not env.get("REDIS_URL"):
            servers.append(start_redis(var / "redis", var / "log" / "redis.log"))
            env["REDIS_URL"] = servers[-1].url + "/0"
        settings = Settings.from_env(env)
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri)
        with client:
            db = client.get_default_database("notifier")
            ensure_indexes(db, settings.price_history_days)
            migrate(db)
            fresh = seed(db, settings.demo_password)
        print(
            f"\n  notifier is starting on {settings.base_url}\n"
            f"  log in as alice (or bob, or admin) with the password {settings.demo_password!r}\n"
            f"  demo data {'seeded' if fresh else 'kept from the last run'}; "
            f"Ctrl-C stops everything\n",
            flush=True,
        )
        if not stopping:
            # If this runner is killed outright, honcho still gets SIGTERM and stops its children.
            procs = subprocess.Popen(
                ["honcho", "-f", "Procfile.dev", "start"], env=env, preexec_fn=die_with_parent
            )
            while procs.poll() is None and not stopping:
                try:
                    procs.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
        return 0
    except (ServerError, ConfigurationError) as e:
        print(f"notifier: {e}")
        return 1
    finally:
        if procs is not None:
            stop(procs, 20)
        for server in reversed(servers):
            server.stop()
        print("notifier: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
