"""The servers every benchmark starts for itself: SecantusDB and redis-server on free ports."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifier.dev.embedded import Server, start_mongo, start_redis  # noqa: E402


def start_databases(prefix: str) -> tuple[Path, dict[str, str], list[Server]]:
    """A scratch folder, the environment naming its servers and a fresh JWT secret, and
    the servers to stop."""
    tmp = Path(tempfile.mkdtemp(prefix=f"notifier-{prefix}-"))
    redis = start_redis(tmp / "redis", tmp / "redis.log")
    mongo = start_mongo(tmp / "mongo", tmp / "mongo.log")
    env = {
        **os.environ,
        "MONGODB_URI": mongo.url + "/bench",
        "REDIS_URL": redis.url + "/0",
        "JWT_SECRET": "bench-" + uuid.uuid4().hex * 2,
        "VAR_DIR": str(tmp),
    }
    return tmp, env, [redis, mongo]


def start_servers(prefix: str, **settings: str) -> tuple[Path, dict[str, str], list[Server]]:
    """A scratch folder, the environment notifier's processes get, and the servers to stop.

    The environment is start_databases' in development mode, plus `settings`
    (e.g. WS_PING_INTERVAL="0").
    """
    tmp, env, servers = start_databases(prefix)
    env |= {
        "NOTIFIER_ENV": "development",
        # Every benchmark client comes from 127.0.0.1: lift the per-address cap (issue 15).
        "CONNECTIONS_PER_ADDRESS": "1000000",
        **settings,
    }
    return tmp, env, servers


def stop_servers(servers: list[Server]) -> None:
    """Stop what start_servers started."""
    for server in servers:
        server.stop()
