"""Logout, a password change and losing the admin role revoke every token issued before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis
from bson import ObjectId
from pymongo import AsyncMongoClient
from tornado.httpclient import HTTPClientError

from notifier.accounts.revocation import GONE, UNCACHED, TokenVersions, sync_uncached_sync
from notifier.dev.embedded import free_port
from tests.conftest import ROOT
from tests.helpers import login


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.gen_test(timeout=60)
async def test_logout_revokes_the_cookie_every_bearer_token_and_live_sockets(
    fetch, ws_connect, alice
):
    response, browser = await login(fetch, alice.username, alice.password)
    assert response.code == 303
    issued = await fetch(
        "/api/token", "POST", {"username": alice.username, "password": alice.password}
    )
    bearer = {"Authorization": f"Bearer {json.loads(issued.body)['token']}"}
    assert (await fetch("/api/me", headers=browser)).code == 200
    assert (await fetch("/api/me", headers=bearer)).code == 200
    token = bearer["Authorization"].removeprefix("Bearer ")
    live = await ws_connect(f"?format=json&token={token}")

    out = await fetch("/logout", "POST", "", headers=browser)
    assert out.code == 303

    assert (await fetch("/api/me", headers=browser)).code == 401
    assert (await fetch("/api/me", headers=bearer)).code == 401
    assert (await fetch("/api/me", headers=alice.auth)).code == 401  # issued before, too
    assert (await fetch("/", headers=browser)).code == 302  # back to the login page
    code, _ = await live.closed()
    assert code is not None
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(f"?format=json&token={token}")
    assert refused.value.code == 401
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect("?format=json", headers={"Cookie": browser["Cookie"]})
    assert refused.value.code in (401, 403)
    # Logging in again works, with a token of the new version.
    response, again = await login(fetch, alice.username, alice.password)
    assert response.code == 303
    assert (await fetch("/api/me", headers=again)).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_role_change_or_new_password_revokes_tokens(fetch, ws_connect, env, admin, alice):
    assert (await fetch("/api/stats", headers=admin.auth)).code == 200
    demoted = cli(env, "set-role", admin.username, "shopper")
    assert demoted.returncode == 0, demoted.stderr
    assert (await fetch("/api/stats", headers=admin.auth)).code == 401
    assert (await fetch("/api/me", headers=admin.auth)).code == 401

    assert (await fetch("/api/me", headers=alice.auth)).code == 200
    live = await ws_connect(f"?format=json&token={alice.token}")
    changed = cli(env, "set-password", alice.username, "--password-stdin", stdin="a-new-password\n")
    assert changed.returncode == 0, changed.stderr
    assert (await fetch("/api/me", headers=alice.auth)).code == 401
    assert (await live.closed())[0] is not None  # the CLI's logout event reached this process
    fresh = await fetch(
        "/api/token", "POST", {"username": alice.username, "password": "a-new-password"}
    )
    assert fresh.code == 200
    token = json.loads(fresh.body)["token"]
    assert (await fetch("/api/me", headers={"Authorization": f"Bearer {token}"})).code == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_revocation_redis_missed_reaches_it_through_the_sweep(
    fetch, env, db, sync_redis, alice
):
    """The CLI stores the new version in MongoDB but cannot tell Redis (which still holds
    the old one): the beat's sweep gives it to Redis, and the old token stops working."""
    assert (await fetch("/api/me", headers=alice.auth)).code == 200  # version 0, cached
    no_redis = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    changed = cli(no_redis, "set-password", alice.username, "--password-stdin", stdin="pw-2-new\n")
    assert changed.returncode == 1 and "Redis is unavailable" in changed.stderr
    user = db.users.find_one({"_id": ObjectId(alice.user_id)})
    assert user["token_version"] == 1 and user[UNCACHED] is True
    assert (await fetch("/api/me", headers=alice.auth)).code == 200  # the stale cache says 0

    assert sync_uncached_sync(db, sync_redis) == 1  # tasks.delivery.republish_pending
    assert (await fetch("/api/me", headers=alice.auth)).code == 401
    assert UNCACHED not in db.users.find_one({"_id": ObjectId(alice.user_id)})
    assert sync_uncached_sync(db, sync_redis) == 0


@pytest.mark.gen_test(timeout=30)
async def test_current_versions_of_many_users_answer_as_a_handshake_would(
    config, db, sync_redis, alice, bob
):
    """Cached versions from Redis; the rest from MongoDB (then cached); unknown users GONE."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(config.mongodb_uri)
    cache = aioredis.Redis.from_url(config.redis_url)
    versions = TokenVersions(mongo.get_default_database(), cache)
    try:
        sync_redis.set(f"notifier:token-version:{alice.user_id}", 7)  # cached: Redis answers
        db.users.update_one({"_id": ObjectId(bob.user_id)}, {"$set": {"token_version": 3}})
        sync_redis.delete(f"notifier:token-version:{bob.user_id}")  # not cached: MongoDB
        nobody = str(ObjectId())
        got = await versions.current_many([alice.user_id, bob.user_id, nobody, "not-an-id"])
        assert got == {alice.user_id: 7, bob.user_id: 3, nobody: GONE, "not-an-id": GONE}
        assert sync_redis.get(f"notifier:token-version:{bob.user_id}") == b"3"
        for user_id in got:
            assert got[user_id] == await versions.current(user_id)
    finally:
        await cache.aclose()
        await mongo.close()


def test_the_cached_version_never_goes_down(db, sync_redis, alice):
    """A sweep that read a version before a later revocation cached a newer one (here:
    Redis holds 6 while the sweep copies 5) must not put the older one back."""
    key = f"notifier:token-version:{alice.user_id}"
    db.users.update_one(
        {"_id": ObjectId(alice.user_id)}, {"$set": {"token_version": 5, UNCACHED: True}}
    )
    sync_redis.set(key, 6)
    assert sync_uncached_sync(db, sync_redis) == 1
    assert sync_redis.get(key) == b"6" and sync_redis.ttl(key) == -1  # untouched
    sync_redis.set(key, 4)
    db.users.update_one({"_id": ObjectId(alice.user_id)}, {"$set": {UNCACHED: True}})
    assert sync_uncached_sync(db, sync_redis) == 1
    assert sync_redis.get(key) == b"5" and sync_redis.ttl(key) > 0  # raised, with its expiry
