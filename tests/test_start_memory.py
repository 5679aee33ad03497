"""A web process imports at start only what serving needs (issue 19: memory per process).

Celery, cryptography (with py-vapid and PyJWT, which imports it) and urllib3 cost a web
process about 19 MB together; they are imported when first used: Celery at the first
enqueue, cryptography at the first push subscription or public-key request, PyJWT at the
first token the fast path does not decide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from notifier import vapid
from notifier.errors import ConfigurationError
from tests.conftest import ROOT
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
