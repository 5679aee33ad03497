"""Web Push (issue 21): the step between the live socket and the email.

The core's rules without a server; subscriptions, the service worker's ack and the SSRF
defence through the web app; deciding and sending through a worker of this module's own
(PUSH_ACK_WAIT=3, EMAIL_ACK_WAIT=12, on a Redis database of its own so the session's
worker never takes its tasks) to a push service stand-in on loopback, whose pushes the
tests decrypt and whose VAPID signatures they check; and Chromium's service worker,
driven through the DevTools protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from playwright.sync_api import sync_playwright
from tornado.httpclient import HTTPRequest

from notifier import vapid
from notifier.accounts.preferences import Preferences
from notifier.dev.embedded import worker_argv
from notifier.errors import ConfigurationError
from notifier.notifications import state
from notifier.push import endpoints
from notifier.push.acks import InvalidAck, ack_token, read_ack_token
from notifier.push.endpoints import PinnedTransport, UnsafeEndpoint
from notifier.push.payloads import deal_payload
from notifier.push.service import PushService
from notifier.push.subscriptions import Subscription
from notifier.settings import Settings
from tests.conftest import ROOT, celery_worker
from tests.helpers import (
    WebProcess,
    acknowledge,
    announce,
    assert_no_email,
    deal_on_socket,
    post_price,
    wait_stored,
    watch,
)
from tests.pushing import PushServiceStandIn, Subscriber, open_push, vapid_claims
from tests.test_browser import CHROMIUM, api, post_deal
from tests.test_email import deal, set_prefs

PUSH_WAIT = 3.0
EMAIL_WAIT = 12.0  # a shown push's ack lands long before, even on a loaded machine
BROKER_DB = 11
FEW_SECONDS = 8.0  # the bound past PUSH_ACK_WAIT: a countdown, a decision, a POST


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# The core, without a server ---------------------------------------------------------------

REFUSED_IN_PRODUCTION = [
    "http://127.0.0.1/push/x",
    "https://10.0.0.1/push/x",
    "https://127.0.0.1/push/x",
    "https://[::1]/push/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://100.100.100.200/",  # shared address space (a cloud's metadata service)
    "https://192.168.1.1/",
    "https://172.16.0.1/",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
    "https://[::ffff:10.0.0.1]/",  # IPv4-mapped
    "https://[2002:a00:1::]/",  # 6to4 around 10.0.0.1
    "https://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
    "http://push.example.com/x",  # http anywhere but loopback
    "https://user:pw@push.example.com/x",
    "https://push.example.com/x#frag",
    "ftp://push.example.com/x",
    "https://push.example.com/\u00e9",
    "https:///x",
    "https://" + "a" * 2100 + ".example/",
]


@pytest.mark.parametrize("url", REFUSED_IN_PRODUCTION)
def test_production_refuses_endpoints_that_are_not_https_on_public_addresses(url):
    with pytest.raises(UnsafeEndpoint):
        endpoints.parse(url, allow_loopback=False)


def test_a_name_is_refused_when_it_resolves_to_loopback_and_development_allows_loopback():
    endpoint = endpoints.parse("https://localhost/push/x", allow_loopback=False)
    with pytest.raises(UnsafeEndpoint, match="public address"):
        endpoints.resolve(endpoint, allow_loopback=False)
    for url in ("http://127.0.0.1:8123/push/x", "https://[::1]/x", "http://127.0.0.1/x"):
        assert endpoints.parse(url, allow_loopback=True).url == url
    for url in ("http://localhost/x", "http://10.0.0.1/x", "https://10.0.0.1/x"):
        with pytest.raises(UnsafeEndpoint):
            endpoints.parse(url, allow_loopback=True)  # http by name, or private: never
    assert endpoints.parse("https://93.184.216.34:8443/p?q=1", False).target == "/p?q=1"
    with pytest.raises(UnsafeEndpoint):
        endpoints.check_addresses([], allow_loopback=True)


def test_an_ack_token_names_a_user_and_seq_and_refuses_tampering_and_age():
    secret = "s" * 40
    token = ack_token(secret, "u1", 7, now=1000.0)
    assert read_ack_token(secret, token, now=1001.0) == read_ack_token(secret, token, now=1001.0)
    ack = read_ack_token(secret, token, now=1001.0)
    assert (ack.user_id, ack.seq) == ("u1", 7)
    payload, _, signature = token.partition(".")
    forged = ack_token("another secret " * 3, "u1", 9, now=1000.0)
    for bad in (
        forged,
        payload + "." + signature[:-2] + "AA",
        forged.partition(".")[0] + "." + signature,  # another claim with this signature
        "",
        "x" * 600,
        "\ud800.x",
        None,
        7,
    ):
        with pytest.raises(InvalidAck):
            read_ack_token(secret, bad, now=1001.0)
    with pytest.raises(InvalidAck, match="expired"):
        read_ack_token(secret, token, now=1000.0 + 3 * 86400)


def test_vapid_settings_production_needs_both_or_runs_without_push(tmp_path):
    base = {
        "NOTIFIER_ENV": "production",
        "JWT_SECRET": "j" * 40,
        "MONGODB_URI": "mongodb://db.example/notifier",
        "REDIS_URL": "redis://redis.example/0",
        "VAR_DIR": str(tmp_path),
    }
    off = Settings.from_env(base)
    assert not off.push_enabled and not (tmp_path / "vapid-private-key").exists()
    key = vapid.new_private_key()
    on = Settings.from_env(
        {**base, "VAPID_PRIVATE_KEY": key, "VAPID_SUBJECT": "mailto:a@b.example"}
    )
    assert on.push_enabled and on.vapid_private_key == key
    for half in ({"VAPID_PRIVATE_KEY": key}, {"VAPID_SUBJECT": "mailto:a@b.example"}):
        with pytest.raises(ConfigurationError, match="VAPID_PRIVATE_KEY and VAPID_SUBJECT"):
            Settings.from_env({**base, **half})
    with pytest.raises(ConfigurationError, match="not a P-256 private key"):
        Settings.from_env(
            {**base, "VAPID_PRIVATE_KEY": "nonsense", "VAPID_SUBJECT": "mailto:a@b.c"}
        )
    with pytest.raises(ConfigurationError, match="VAPID_SUBJECT must be a mailto"):
        Settings.from_env({**base, "VAPID_PRIVATE_KEY": key, "VAPID_SUBJECT": "a@b.example"})
    # Development: a pair generated once under var/, the same for every process after.
    dev = {"VAR_DIR": str(tmp_path / "dev"), "NOTIFIER_ENV": "development"}
    first, again = Settings.from_env(dev), Settings.from_env(dev)
    assert first.push_enabled and first.vapid_private_key == again.vapid_private_key
    assert (tmp_path / "dev" / "vapid-private-key").stat().st_mode & 0o777 == 0o600


def test_the_vapid_keys_command_prints_a_pair_without_any_settings():
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "vapid-keys"],
        cwd=ROOT,
        env={**os.environ, "NOTIFIER_ENV": "production"},  # nothing else configured
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [comment, setting] = result.stdout.splitlines()
    private = setting.removeprefix("VAPID_PRIVATE_KEY=")
    assert comment.endswith(vapid.public_key(private))
    assert len(vapid.unb64url(vapid.public_key(private))) == 65


def test_a_deal_payload_names_the_headline_the_items_page_and_the_id():
    note = {
        "seq": 12,
        "data": {
            "headline": "Oat Milk 1L $1.99 at Fresh Mart, 33% off",
            "deals": [
                {"item_name": "Oat Milk 1L", "best_price_in_cents": 199, "store_name": "Fresh Mart"}
            ],
            "deal_details": [{"item_key": "oat milk 1l"}],
        },
    }
    payload = deal_payload("https://n.example", note, 1, "tok")
    assert payload == {
        "type": "deal",
        "id": "000000000012",
        "headline": "Oat Milk 1L $1.99 at Fresh Mart, 33% off",
        "body": "Oat Milk 1L $1.99 at Fresh Mart",
        "url": "https://n.example/items/oat%20milk%201l",
        "tag": "deal:oat milk 1l",
        "count": 1,
        "ack": "tok",
    }
    assert "+2 earlier deal alerts" in deal_payload("https://n.example", note, 3, "t")["body"]


def test_subscription_bodies_are_read_strictly():
    good = Subscriber("https://push.example.com/x").json()
    assert Subscription.parse(good, allow_loopback=False).endpoint == good["endpoint"]
    bad_point = {**good, "keys": {**good["keys"], "p256dh": "BA" + "A" * 85}}
    for body in (
        None,
        [],
        {**good, "extra": 1},
        {"endpoint": good["endpoint"]},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"]}},
        {**good, "keys": {**good["keys"], "auth": "AAAA"}},
        {**good, "keys": {**good["keys"], "auth": "!!notbase64!!"}},
        bad_point,
        {**good, "expirationTime": "soon"},
        {**good, "endpoint": "http://127.0.0.1/x"},
    ):
        with pytest.raises(ValueError):  # InputError (UnsafeEndpoint is one), nothing more
            Subscription.parse(body, allow_loopback=False)


# Deciding, against MongoDB (no worker) ----------------------------------------------------


def subscribe_directly(db, user, endpoint: str, version: int = 0) -> None:
    now = datetime.now(UTC)
    sub = Subscriber(endpoint).json()
    db.push_subscriptions.insert_one(
        {
            "endpoint": endpoint,
            "user_id": user.user_id,
            "p256dh": sub["keys"]["p256dh"],
            "auth": sub["keys"]["auth"],
            "token_version": version,
            "created_at": now,
            "updated_at": now,
        }
    )


def test_a_round_pushes_once_per_user_the_newest_unseen_deal(config, db, alice, bob, make_user):
    service = PushService(config, db)
    carol = make_user(prefix="carol")
    for user in (alice, bob):
        subscribe_directly(db, user, f"https://push.example.com/{user.user_id}")
    seen, read, first, newest = (deal(db, alice, i) for i in ("A", "B", "C", "D"))
    db.user_state.update_one({"_id": alice.user_id}, state.acknowledged(seen["seq"]))
    db.notifications.update_one({"_id": read["_id"]}, {"$set": {"read": True}})
    bobs = deal(db, bob, "E")
    carols = deal(db, carol, "F")  # no subscription: nothing to push
    ids = [n["_id"] for n in (seen, read, first, newest, bobs, carols)]
    notes = list(db.notifications.find({"_id": {"$in": ids}}))  # as a round reads them
    planned = service.decide(notes)
    assert set(planned) == {f"push-{newest['_id']}", f"push-{bobs['_id']}"}
    push = db.pushes.find_one({"_id": f"push-{newest['_id']}"})
    assert push["notification_ids"] == sorted([first["_id"], newest["_id"]])
    assert push["payload"]["id"] == f"{newest['seq']:012d}" and push["payload"]["count"] == 2
    ack = read_ack_token(config.jwt_secret, push["payload"]["ack"])
    assert (ack.user_id, ack.seq) == (alice.user_id, newest["seq"])
    assert service.decide(notes) == []  # decided once: the same round plans nothing new


def test_no_push_when_deal_pushes_are_off_or_in_quiet_hours(config, db, alice, bob):
    service = PushService(config, db)
    for user in (alice, bob):
        subscribe_directly(db, user, f"https://push.example.com/{user.user_id}")
    set_prefs(db, alice, push_deals=False)
    now = datetime.now(UTC)
    quiet = [
        (now - timedelta(hours=1)).strftime("%H:%M"),
        (now + timedelta(hours=1)).strftime("%H:%M"),
    ]
    set_prefs(db, bob, quiet_hours_start=quiet[0], quiet_hours_end=quiet[1])
    assert Preferences.from_doc(db.users.find_one({"_id": ObjectId(bob.user_id)})).quiet_until(now)
    assert service.decide([deal(db, alice, "G"), deal(db, bob, "H")]) == []
    assert db.pushes.count_documents({"user_id": {"$in": [alice.user_id, bob.user_id]}}) == 0


# Sending to the stand-in from the core (no worker) ------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[PushServiceStandIn]:
    service = PushServiceStandIn()
    service.start()
    yield service
    service.stop()


def planned_push(config, db, user, standin, *names: str) -> tuple[PushService, str, dict]:
    """A deal of the user's, subscribed at these stand-in endpoints, decided."""
    for name in names:
        subscribe_directly(db, user, standin.url(name))
    service = PushService(config, db)
    note = deal(db, user, "Tea")
    [push_id] = service.decide([note])
    return service, push_id, note


def test_a_push_is_encrypted_for_the_browser_and_signed_with_vapid(config, db, alice, standin):
    subscriber = Subscriber(standin.url(f"ok-{alice.user_id}"))
    service = PushService(config, db)
    db.push_subscriptions.insert_one(
        {
            "endpoint": subscriber.endpoint,
            "user_id": alice.user_id,
            "p256dh": subscriber.json()["keys"]["p256dh"],
            "auth": subscriber.json()["keys"]["auth"],
            "token_version": 0,
            "updated_at": datetime.now(UTC),
        }
    )
    note = deal(db, alice, "Tea")
    [push_id] = service.decide([note])
    assert service.send(push_id, "task-1") == "sent"
    [received] = standin.to(f"ok-{alice.user_id}")
    assert received.headers["Ttl"] == "86400" and received.headers["Urgency"] == "high"
    claims = vapid_claims(received, vapid.public_key(config.vapid_private_key))
    assert claims["sub"] == config.vapid_subject
    payload = open_push(received, subscriber)
    assert payload["id"] == f"{note['seq']:012d}" and payload["headline"]
    assert payload["url"] == f"{config.base_url}/items/tea"
    assert service.send(push_id, "task-2") == "skipped: sent, or being sent by another task"


def test_gone_retried_redirected_and_hanging_endpoints(config, db, alice, standin, monkeypatch):
    monkeypatch.setattr(endpoints, "READ_TIMEOUT", 0.5)
    u = alice.user_id
    standin.script(f"flaky-{u}", 503)
    standin.script(f"moved-{u}", 307, 307)
    names = (f"ok-{u}", f"gone-{u}", f"flaky-{u}", f"moved-{u}", f"hang-{u}")
    service, push_id, _ = planned_push(config, db, alice, standin, *names)
    with pytest.raises(Exception, match="3 failed"):
        service.send(push_id, "task-1")  # the task retries...
    assert db.push_subscriptions.count_documents({"endpoint": standin.url(f"gone-{u}")}) == 0
    assert service.send(push_id, "task-1", last_try=True) == "failed"  # ...until its last try
    assert len(standin.to(f"ok-{u}")) == 1  # delivered once: not sent again on the retry
    assert len(standin.to(f"flaky-{u}")) == 2  # 503, then 201
    assert len(standin.to(f"moved-{u}")) == 2 and standin.to("followed") == []  # no redirect
    assert db.pushes.find_one({"_id": push_id})["done"] == [
        standin.url(f"ok-{u}"),
        standin.url(f"flaky-{u}"),
    ]


def test_at_send_time_a_private_address_is_refused_and_a_revoked_browser_dropped(
    config, db, alice, bob, standin
):
    # Stored under development's rules, sent under production's: refused, and dropped.
    service, push_id, _ = planned_push(config, db, alice, standin, f"ok-{alice.user_id}")
    strict = PushService(config, db, PinnedTransport(allow_loopback=False))
    assert strict.send(push_id, "task-1") == "sent"  # nothing left to send to
    assert standin.to(f"ok-{alice.user_id}") == []
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 0
    # A logout since the browser subscribed: its subscription no longer speaks for bob.
    service, push_id, _ = planned_push(config, db, bob, standin, f"ok-{bob.user_id}")
    db.users.update_one({"_id": ObjectId(bob.user_id)}, {"$inc": {"token_version": 1}})
    assert service.send(push_id, "task-1") == "sent"
    assert standin.to(f"ok-{bob.user_id}") == []
    assert db.push_subscriptions.count_documents({"user_id": bob.user_id}) == 0


def test_a_deal_acknowledged_after_the_decision_is_not_pushed(config, db, alice, standin):
    service, push_id, note = planned_push(config, db, alice, standin, f"ok-{alice.user_id}")
    db.user_state.update_one({"_id": alice.user_id}, state.acknowledged(note["seq"]))
    assert service.send(push_id, "task-1") == "seen"
    assert standin.to(f"ok-{alice.user_id}") == []


# Through the web app ------------------------------------------------------------------------


@pytest.fixture
def app_config(config, redis_server, request):
    """This module's app sends its tasks to this module's worker; a test may ask for
    production (`indirect` parametrization) or production without VAPID keys."""
    changes: dict[str, Any] = {"redis_url": f"{redis_server.url}/{BROKER_DB}"}
    mode = getattr(request, "param", "development")
    if mode != "development":
        changes["env"] = "production"
    if mode == "production without push":
        changes["vapid_private_key"] = None
    return dataclasses.replace(config, **changes)


@pytest.fixture(autouse=True)
def no_subscriptions_left(db):
    """Subscriptions end with their test: another test's announcement would push to them."""
    yield
    db.push_subscriptions.delete_many({})


async def delete(http_client, base_url, path, body, headers):
    request = HTTPRequest(
        base_url + path,
        method="DELETE",
        body=json.dumps(body),
        headers=headers,
        allow_nonstandard_methods=True,
    )
    return await http_client.fetch(request, raise_error=False)


def error_code(response) -> str:
    return json.loads(response.body)["error"]["code"]


@pytest.mark.gen_test
async def test_the_public_key_is_public_and_signs_the_pushes(fetch, config):
    response = await fetch("/api/push/public-key")
    assert response.code == 200
    key = json.loads(response.body)["public_key"]
    assert key == vapid.public_key(config.vapid_private_key)
    assert len(vapid.unb64url(key)) == 65


@pytest.mark.parametrize("app_config", ["production without push"], indirect=True)
@pytest.mark.gen_test
async def test_without_vapid_keys_in_production_push_is_off_and_says_so(fetch, app_config, alice):
    assert app_config.production and not app_config.push_enabled
    for path, method, body in (
        ("/api/push/public-key", "GET", None),
        ("/api/push-subscriptions", "POST", Subscriber("https://93.184.216.34/x").json()),
        ("/api/push/ack", "POST", {"token": "x"}),
    ):
        response = await fetch(path, method, body, headers=alice.auth)
        assert response.code == 404 and error_code(response) == "push_disabled"


@pytest.mark.parametrize("app_config", ["production"], indirect=True)
@pytest.mark.gen_test
async def test_production_refuses_loopback_and_private_endpoints_with_400(
    fetch, app_config, db, alice
):
    assert app_config.production
    for url in (
        "http://127.0.0.1/push/x",
        "https://10.0.0.1/push/x",
        "https://169.254.169.254/latest/",
        "https://localhost:8443/push/x",  # a name that resolves to loopback
        "https://[::ffff:127.0.0.1]/x",
    ):
        response = await fetch(
            "/api/push-subscriptions", "POST", Subscriber(url).json(), headers=alice.auth
        )
        assert response.code == 400, url
        assert error_code(response) == "invalid_endpoint"
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 0
    public = Subscriber("https://93.184.216.34/push/x").json()
    response = await fetch("/api/push-subscriptions", "POST", public, headers=alice.auth)
    assert response.code == 201


@pytest.mark.gen_test
async def test_subscriptions_are_idempotent_capped_per_user_and_removable(
    fetch, http_client, base_url, db, alice, bob
):
    one = Subscriber("http://127.0.0.1:9/push/one").json()
    assert (await fetch("/api/push-subscriptions", "POST", one)).code == 401
    for bad in ({**one, "keys": {}}, {**one, "extra": True}, "not json", {**one, "endpoint": 7}):
        body = bad if isinstance(bad, str) else json.dumps(bad)
        response = await fetch("/api/push-subscriptions", "POST", body, headers=alice.auth)
        assert response.code == 400, bad
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 0
    for _ in range(2):  # the same browser twice: one subscription
        response = await fetch("/api/push-subscriptions", "POST", one, headers=alice.auth)
        assert response.code == 201 and json.loads(response.body) == {"endpoint": one["endpoint"]}
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 1
    for i in range(11):  # the eleventh pushes the least recently registered out
        sub = Subscriber(f"http://127.0.0.1:9/push/n{i}").json()
        assert (await fetch("/api/push-subscriptions", "POST", sub, headers=alice.auth)).code == 201
    kept = {d["endpoint"] for d in db.push_subscriptions.find({"user_id": alice.user_id})}
    assert len(kept) == 10 and one["endpoint"] not in kept
    # A browser another user subscribes becomes theirs; alice cannot remove bob's.
    moved = Subscriber("http://127.0.0.1:9/push/n10").json()
    assert (await fetch("/api/push-subscriptions", "POST", moved, headers=bob.auth)).code == 201
    assert db.push_subscriptions.find_one({"endpoint": moved["endpoint"]})["user_id"] == bob.user_id
    mine = {"endpoint": moved["endpoint"]}
    assert (
        await delete(http_client, base_url, "/api/push-subscriptions", mine, alice.auth)
    ).code == 204
    assert db.push_subscriptions.count_documents({"user_id": bob.user_id}) == 1
    for bad in ({}, {"all": False}, {"endpoint": ""}, {"endpoint": "x", "all": True}):
        response = await delete(http_client, base_url, "/api/push-subscriptions", bad, alice.auth)
        assert response.code == 400, bad
    first = {"endpoint": "http://127.0.0.1:9/push/n1"}
    assert (
        await delete(http_client, base_url, "/api/push-subscriptions", first, alice.auth)
    ).code == 204
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 8
    everything = {"all": True}
    assert (
        await delete(http_client, base_url, "/api/push-subscriptions", everything, alice.auth)
    ).code == 204
    assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 0


@pytest.mark.gen_test
async def test_the_service_workers_ack_counts_as_seen_and_a_bad_one_changes_nothing(
    fetch, db, config, alice
):
    first, second = deal(db, alice, "A"), deal(db, alice, "B")
    token = ack_token(config.jwt_secret, alice.user_id, first["seq"])
    _, _, signature = token.partition(".")
    other = ack_token(config.jwt_secret, alice.user_id, second["seq"]).partition(".")[0]
    for bad in ({}, {"token": token, "extra": 1}, {"token": f"{other}.{signature}"}, {"token": 5}):
        response = await fetch("/api/push/ack", "POST", bad)
        assert response.code == 400, bad
    assert int((db.user_state.find_one({"_id": alice.user_id}) or {}).get("acked_seq", 0)) == 0
    # No cookie, no XSRF token: the signed token is the proof.
    response = await fetch("/api/push/ack", "POST", {"token": token})
    assert response.code == 204
    assert db.user_state.find_one({"_id": alice.user_id})["acked_seq"] == first["seq"]


@pytest.mark.gen_test
async def test_push_preferences_per_type(fetch, db, alice):
    body = {"push_deals": False, "push_announcements": True}
    response = await fetch("/api/preferences", "PUT", body, headers=alice.auth)
    assert response.code == 200 and json.loads(response.body)["push_deals"] is False
    stored = Preferences.from_doc(db.users.find_one({"_id": ObjectId(alice.user_id)}))
    assert not stored.push_deals and stored.push_announcements
    for bad in ({"push_deals": "no"}, {"push_announcements": 1}, {"push_deals": None}):
        assert (await fetch("/api/preferences", "PUT", bad, headers=alice.auth)).code == 400


# Through this module's worker: decided after PUSH_ACK_WAIT, sent to the stand-in -------------


@pytest.fixture(scope="module")
def push_env(env, redis_server) -> dict[str, str]:
    return {
        **env,
        "REDIS_URL": f"{redis_server.url}/{BROKER_DB}",
        "PUSH_ACK_WAIT": f"{PUSH_WAIT:g}",
        "EMAIL_ACK_WAIT": f"{EMAIL_WAIT:g}",
    }


@pytest.fixture(scope="module")
def push_worker(push_env, var_dir) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker of this module's own, on its own broker database."""
    argv, log = worker_argv(name="push@%h"), var_dir / "push-worker.log"
    with celery_worker(argv, push_env, push_env["REDIS_URL"], log) as proc:
        yield proc


def wait_push_decided(db, user_id: str) -> None:
    """Block until none of the user's deal notifications waits for its push decision."""
    query = {"user_id": user_id, "push_pending": True}
    wait_stored(
        db.notifications,
        lambda: (
            db.notifications.count_documents({"user_id": user_id}) > 0
            and not db.notifications.count_documents(query)
        ),
        "the push was never decided",
    )


async def subscribe(fetch, user, subscriber: Subscriber) -> None:
    response = await fetch("/api/push-subscriptions", "POST", subscriber.json(), headers=user.auth)
    assert response.code == 201, response.body


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("push_worker")
async def test_a_deal_for_a_shopper_with_no_socket_is_pushed_once_after_the_wait(
    fetch, db, config, standin, alice, admin, item
):
    subscriber = Subscriber(standin.url(f"ok-{alice.user_id}"))
    await subscribe(fetch, alice, subscriber)
    await watch(fetch, alice, item)
    await post_price(fetch, admin, item)  # $1.99, regular $2.99
    [received] = await in_thread(standin.wait_for, f"ok-{alice.user_id}", 1, PUSH_WAIT + 30)
    note = db.notifications.find_one({"user_id": alice.user_id, "type": "deal-notification"})
    stored = state.utc(note["created_at"])
    assert stored is not None
    took = received.at - stored.timestamp()
    assert PUSH_WAIT <= took <= PUSH_WAIT + FEW_SECONDS, took
    key = json.loads((await fetch("/api/push/public-key")).body)["public_key"]
    assert vapid_claims(received, key)["sub"] == config.vapid_subject
    payload = open_push(received, subscriber)
    assert payload["headline"] == f"{item} $1.99 at Fresh Mart, 33% off" == note["data"]["headline"]
    key_of_item = urllib.parse.quote(" ".join(item.split()).casefold(), safe="")
    assert payload["url"] == f"{config.base_url}/items/{key_of_item}"
    assert payload["id"] == note["data"]["notification_id"]
    wait_stored(
        db.pushes,
        lambda: (db.pushes.find_one({"user_id": alice.user_id}) or {}).get("status") == "sent",
        "the push was never marked sent",
    )
    assert len(standin.to(f"ok-{alice.user_id}")) == 1
    print(f"\nPUSH_ACK_WAIT={PUSH_WAIT:g}s: deal stored -> push service {took:.2f} s")


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("push_worker")
async def test_a_shopper_whose_page_acknowledges_gets_no_push(
    fetch, ws_connect, db, standin, alice, admin, item
):
    await subscribe(fetch, alice, Subscriber(standin.url(f"ok-{alice.user_id}")))
    sock, note = await deal_on_socket(fetch, ws_connect, alice, admin, item)
    await acknowledge(sock, note["data"]["id"])
    await in_thread(wait_push_decided, db, alice.user_id)
    assert db.pushes.count_documents({"user_id": alice.user_id}) == 0
    assert standin.to(f"ok-{alice.user_id}") == []


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("push_worker")
async def test_a_410_from_the_push_service_deletes_the_subscription(
    fetch, db, standin, alice, admin, item
):
    gone = Subscriber(standin.url(f"gone-{alice.user_id}"))
    await subscribe(fetch, alice, gone)
    await watch(fetch, alice, item)
    await post_price(fetch, admin, item)
    await in_thread(standin.wait_for, f"gone-{alice.user_id}", 1, PUSH_WAIT + 30)
    wait_stored(
        db.push_subscriptions,
        lambda: db.push_subscriptions.count_documents({"endpoint": gone.endpoint}) == 0,
        "the subscription the push service called gone was kept",
    )


@pytest.mark.gen_test(timeout=60)
@pytest.mark.usefixtures("push_worker")
async def test_an_announcement_is_pushed_to_those_who_want_it(
    fetch, db, standin, alice, bob, admin
):
    await subscribe(fetch, alice, mine := Subscriber(standin.url(f"ok-{alice.user_id}")))
    await subscribe(fetch, bob, Subscriber(standin.url(f"ok-{bob.user_id}")))
    set_prefs(db, bob, push_announcements=False)
    await announce(fetch, admin, "Store hours change on Sunday", "warning")
    [received] = await in_thread(standin.wait_for, f"ok-{alice.user_id}", 1, 30)
    payload = open_push(received, mine)
    assert payload["type"] == "announcement" and payload["headline"] == "Warning"
    assert payload["body"] == "Store hours change on Sunday" and "ack" not in payload
    # Planned in the same task as alice's: bob, who does not want them, got none.
    assert db.pushes.count_documents({"user_id": bob.user_id}) == 0
    assert standin.to(f"ok-{bob.user_id}") == []


# Chromium: the page registers the service worker, which shows a push and acknowledges it -----

chromium_only = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
NOTIFICATIONS = """() => self.registration.getNotifications().then(ns => ns.map(n => (
    {title: n.title, body: n.body, tag: n.tag, url: (n.data || {}).url})))"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, as tests/test_browser.py drives it."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def push_web(push_env) -> Iterator[WebProcess]:
    """`python -m web` for the browser (a real origin), on this module's worker."""
    process = WebProcess(push_env)
    process.start()
    yield process
    process.stop()


class ServiceWorkerTab:
    """A logged-in Chromium tab whose page registered /sw.js, with a DevTools session."""

    def __init__(self, browser: Any, web: WebProcess, user: Any) -> None:
        self.web = web
        self.context = browser.new_context()
        self.context.grant_permissions(["notifications"], origin=web.url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(web.url + "/login")
        self.page.get_by_label("Username").fill(user.username)
        self.page.get_by_label("Password").fill(user.password)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(web.url + "/")
        self.page.wait_for_selector("#live-status.live")
        self.scope, self.script = self.page.evaluate(
            "navigator.serviceWorker.ready.then(r => [r.scope, r.active.scriptURL])"
        )
        self.cdp = self.context.new_cdp_session(self.page)
        registrations: list[dict[str, Any]] = []
        self.cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        self.cdp.send("ServiceWorker.enable")  # reports the registrations it knows, soon
        deadline = time.monotonic() + 10
        while not (
            ids := {
                r["registrationId"]
                for r in registrations
                if r["scopeURL"] == self.scope and not r["isDeleted"]
            }
        ):
            assert time.monotonic() < deadline, "DevTools never reported the registration"
            self.cdp.send("Runtime.evaluate", {"expression": "0"})  # a round trip: events land
        [self.registration_id] = ids

    def deliver(self, data: str) -> None:
        """What the browser does when its push service delivers a push (decrypted)."""
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.web.url, "registrationId": self.registration_id, "data": data},
        )

    def shown(self) -> list[dict[str, Any]]:
        """The notifications the service worker is showing."""
        [worker] = self.context.service_workers
        return worker.evaluate(NOTIFICATIONS)

    def close(self) -> None:
        self.context.close()


@chromium_only
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("push_worker")
def test_chromium_shows_a_pushed_deal_acknowledges_it_and_no_email_follows(
    chromium, push_web, standin, db, mailbox, alice, admin, item
):
    tab = ServiceWorkerTab(chromium, push_web, alice)
    try:
        assert (tab.scope, tab.script) == (push_web.url + "/", push_web.url + "/sw.js")
        with urllib.request.urlopen(push_web.url + "/sw.js", timeout=10) as answer:  # noqa: S310
            assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
            assert "javascript" in answer.headers["Content-Type"]
        # Chromium cannot subscribe here (its vendor's push service is out of reach): the
        # test holds the browser's keys, and hands the service worker what it decrypts.
        name = f"browser-{alice.user_id}"
        subscriber = Subscriber(standin.url(name))
        api(push_web, alice, "/api/push-subscriptions", subscriber.json())
        api(push_web, alice, "/api/watchlist", {"item_name": item})
        tab.page.goto("about:blank")  # the shopper closed the app's tab
        post_deal(push_web, admin, item)
        [received] = standin.wait_for(name, 1, PUSH_WAIT + 30)
        payload = open_push(received, subscriber)
        tab.deliver(json.dumps(payload))
        note = db.notifications.find_one({"user_id": alice.user_id})
        wait_stored(
            db.user_state,
            lambda: (
                (db.user_state.find_one({"_id": alice.user_id}) or {}).get("acked_seq", 0)
                >= note["seq"]
            ),
            "the service worker never acknowledged the push",
        )
        assert tab.shown() == [
            {
                "title": note["data"]["headline"],
                "body": f"{item} $1.99 at Fresh Mart",
                "tag": payload["tag"],
                "url": payload["url"],
            }
        ]
        assert_no_email(db, mailbox[0], alice)  # EMAIL_ACK_WAIT after the deal was stored
        assert tab.errors == []
    finally:
        tab.close()


@chromium_only
@pytest.mark.timeout(60)
def test_chromium_shows_nothing_while_a_tab_of_the_app_is_in_view(chromium, push_web, alice):
    tab = ServiceWorkerTab(chromium, push_web, alice)
    try:
        assert tab.page.evaluate("document.visibilityState") == "visible"
        first = {"type": "deal", "id": "000000000001", "headline": "In view", "tag": "deal:a"}
        tab.deliver(json.dumps(first))  # the page shows its deals itself
        tab.page.goto("about:blank")
        # The worker asks for the app's visible windows; the tab that left may be listed a
        # moment longer, so the next push goes once the worker no longer sees it.
        tab.context.service_workers[0].evaluate(
            """() => new Promise(done => {
                const look = () => clients.matchAll({type: "window", includeUncontrolled: true})
                    .then(tabs => tabs.some(t => t.visibilityState === "visible")
                        ? setTimeout(look, 50) : done());
                look();
            })"""
        )
        second = {**first, "id": "000000000002", "headline": "Out of view", "tag": "deal:b"}
        tab.deliver(json.dumps(second))
        tab.context.service_workers[0].evaluate(
            """() => new Promise(done => {
                const look = () => self.registration.getNotifications()
                    .then(ns => ns.length ? done() : setTimeout(look, 50));
                look();
            })"""
        )
        assert [n["title"] for n in tab.shown()] == ["Out of view"]
    finally:
        tab.close()


@chromium_only
@pytest.mark.timeout(60)
def test_chromium_preferences_save_push_per_type_and_turn_push_off_everywhere(
    chromium, push_web, db, alice
):
    for n in range(2):  # two browsers of alice's, subscribed earlier
        api(
            push_web,
            alice,
            "/api/push-subscriptions",
            Subscriber(f"https://93.184.216.{n}/p").json(),
        )
    tab = ServiceWorkerTab(chromium, push_web, alice)
    try:
        tab.page.goto(push_web.url + "/preferences")
        card = tab.page.locator("section[aria-labelledby=push-heading]")
        assert "Push is on for 2 browsers" in card.inner_text()
        tab.page.get_by_label("Announcements").uncheck()
        tab.page.get_by_role("button", name="Save").click()
        tab.page.wait_for_url("**/preferences?saved=1")
        prefs = Preferences.from_doc(db.users.find_one({"_id": ObjectId(alice.user_id)}))
        assert prefs.push_deals and not prefs.push_announcements
        assert not tab.page.is_checked("input[name=push_announcements]")
        # A cookie-authenticated DELETE from the page's script, with its XSRF token.
        tab.page.get_by_role("button", name="Turn it off on every browser").click()
        tab.page.wait_for_selector("text=Push is off on all your browsers.")
        assert db.push_subscriptions.count_documents({"user_id": alice.user_id}) == 0
        assert not tab.page.is_checked("#push-notifications")
        assert tab.errors == []
    finally:
        tab.close()
