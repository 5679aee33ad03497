"""A web process imports at start only what serving needs, and the parent of several
imports nothing of the app (issue 19: memory per process).

Celery, cryptography (with py-vapid and PyJWT, which imports it) and urllib3 cost a web
process about 19 MB together; they are imported when first used: Celery at the first
enqueue, cryptography at the first push subscription or public-key request, PyJWT at the
first token the fast path does not decide.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from notifier import vapid
from notifier.dev.embedded import free_port
from notifier.errors import ConfigurationError
from tests.conftest import ROOT
from tests.helpers import read_until, reap, spawn
from web.taskqueue import TaskQueue, broker_unreachable

LATER = ("celery", "kombu", "cryptography.hazmat", "jwt", "py_vapid", "pywebpush", "urllib3")

# Settings as `python -m web` reads them, the serving modules, and the app with its clients
# (made on the loop, as web/serve.py does; nothing connects until used).
START = """
import asyncio, json, sys
from notifier.settings import Settings
config = Settings.from_env()
from web import serve
from web.app import make_app, mongo_client
from notifier.realtime.registry import ConnectionRegistry

async def build():
    mongo = mongo_client(config)
    redis = serve.aioredis.Redis.from_url(config.redis_url)
    make_app(config, mongo.get_default_database("notifier"), redis, ConnectionRegistry(), "p")
    await redis.aclose()
    await mongo.close()

asyncio.run(build())
print(json.dumps(sorted(sys.modules)))
"""


def test_a_web_process_starts_without_celery_cryptography_pyjwt_or_urllib3(tmp_path):
    env = {
        **os.environ,
        "NOTIFIER_ENV": "development",  # a VAPID key generated and checked: push is on
        "VAR_DIR": str(tmp_path),
        "MONGODB_URI": "mongodb://127.0.0.1:1/notifier",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-c", START],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert "tornado.web" in loaded and "web.handlers.ws" in loaded
    assert [m for m in loaded if m.split(".")[0] in LATER or m.startswith(LATER)] == []


@pytest.mark.parametrize(
    ("scalar", "signs"),
    [(1, True), (vapid.ORDER - 1, True), (0, False), (vapid.ORDER, False), (2**256 - 1, False)],
)
def test_a_raw_vapid_key_is_checked_at_start_as_the_signer_would(scalar, signs):
    key = vapid.b64url(scalar.to_bytes(32, "big"))
    for check in (vapid.check_private_key, vapid.signer):
        if signs:
            check(key)
        else:
            with pytest.raises(ConfigurationError, match="not a P-256 private key"):
                check(key)


def test_new_vapid_keys_sign_and_a_der_key_is_still_read():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    for _ in range(20):
        key = vapid.new_private_key()
        vapid.check_private_key(key)
        assert len(vapid.unb64url(vapid.public_key(key))) == 65
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    vapid.check_private_key(vapid.b64url(der))  # not the raw form: the signer decides
    with pytest.raises(ConfigurationError):
        vapid.check_private_key(vapid.b64url(der[:-3]))


def test_an_unreachable_broker_is_an_outage_once_celery_is_imported():
    assert not broker_unreachable(OSError("not the broker"))
    with pytest.raises(Exception) as failure:
        TaskQueue("redis://127.0.0.1:1/0").send("tasks.nothing", {})
    assert broker_unreachable(failure.value)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(120)
def test_the_parent_of_web_processes_is_small_restarts_a_dead_one_and_stops_them_all(env):
    port = free_port()
    proc = spawn([sys.executable, "-m", "web"], {**env, "PORT": str(port), "WEB_CONCURRENCY": "2"})
    seen: list[str] = []
    try:
        read_until(proc, f"supervising 2 web processes on port {port}", 30, seen)
        for _ in range(2 - sum("web listening on port" in line for line in seen)):
            read_until(proc, "web listening on port", 30, seen)
        # The parent is web/supervisor.py now (exec): none of the app it forked them from.
        assert "web.supervisor" in Path(f"/proc/{proc.pid}/cmdline").read_text()
        assert vm_rss_mib(proc.pid) < 25
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        [metrics] = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_MULTI")]
        assert Path(metrics.decode()).is_dir()
        first = children_of(proc.pid)
        assert len(first) == 2
        dead = min(first)
        os.kill(dead, signal.SIGKILL)
        read_until(proc, f"(pid {dead}) exited (signal 9)", 30, seen)
        read_until(proc, "web listening on port", 60, seen)  # imported the app itself
        assert len(children_of(proc.pid) - first) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not Path(metrics.decode()).exists()
    finally:
        reap(proc)


# A child dies and is started again; SIGTERM comes while the new one is being forked.
STOP_DURING_RESTART = """
import os, signal, sys, time
from web.supervisor import start_child, watch

def sleeper():
    time.sleep(30)
    return 0

def restart(index):
    os.kill(os.getpid(), signal.SIGTERM)
    return start_child(sleeper)

sys.exit(watch({start_child(lambda: 3): 0}, restart, None))
"""


def test_a_stop_while_a_child_is_restarted_reaches_that_child_too():
    result = subprocess.run(
        [sys.executable, "-c", STOP_DURING_RESTART], cwd=ROOT, capture_output=True, timeout=15
    )
    assert result.returncode == 0, result.stderr
