"""Logins are rate-limited per account and per address: 429 with Retry-After."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.helpers import login


@pytest.fixture
def app_config(config):
    return dataclasses.replace(config, login_attempts_per_account=3, login_attempts_per_address=6)


@pytest.fixture(autouse=True)
def fresh_counters(sync_redis):
    """Every test here starts from zero, and leaves nothing for the rest of the suite
    (all its requests come from 127.0.0.1)."""

    def clear() -> None:
        for key in sync_redis.scan_iter("notifier:login:*"):
            sync_redis.delete(key)

    clear()
    yield
    clear()


async def token(fetch, username, password):
    return await fetch("/api/token", "POST", {"username": username, "password": password})


@pytest.mark.gen_test
async def test_an_account_is_locked_after_three_failures_even_with_the_right_password(fetch, alice):
    for _ in range(3):
        assert (await token(fetch, alice.username, "wrong")).code == 401
    locked = await token(fetch, alice.username, alice.password)
    assert locked.code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 900
    assert json.loads(locked.body)["error"]["code"] == "too_many_attempts"
    response, _ = await login(fetch, alice.username, alice.password)  # the form is limited too
    assert response.code == 429 and "Too many failed logins" in response.body.decode()


@pytest.mark.gen_test
async def test_a_success_clears_the_account_count(fetch, alice):
    for _ in range(2):
        await token(fetch, alice.username, "wrong")
    assert (await token(fetch, alice.username, alice.password)).code == 200
    for _ in range(2):
        assert (await token(fetch, alice.username, "wrong")).code == 401
    assert (await token(fetch, alice.username, alice.password)).code == 200


@pytest.mark.gen_test
async def test_an_address_is_limited_across_accounts(fetch, make_user):
    users = [make_user() for _ in range(3)]
    for user in users:
        for _ in range(2):
            assert (await token(fetch, user.username, "wrong")).code == 401
    fresh = make_user()
    refused = await token(fetch, fresh.username, fresh.password)
    assert refused.code == 429 and int(refused.headers["Retry-After"]) > 0
