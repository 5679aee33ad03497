"""Break things on purpose: Redis killed and restarted, subscriptions cut or frozen.

In each case every notification stored in MongoDB reaches the connected client exactly
once and in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
import redis
from tornado.httpclient import HTTPClientError

from notifier.dev.embedded import Server, start_redis
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.disconnect import LOGGED_OUT
from notifier.realtime.publishing import NotificationService
from tests.helpers import announcement_message, collect, login, numbered_notes, restartable
from web.taskqueue import TaskQueue


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server this test may kill and restart (same port, same data)."""
    with restartable(start_redis, tmp_path / "redis") as box:
        yield box


@pytest.fixture
def app_config(config, own_redis):
    return dataclasses.replace(config, redis_url=own_redis["server"].url + "/0")


@pytest.fixture
def listen_options():
    return {"ping_every": 0.2, "dead_after": 1.0, "max_backoff": 0.5}


@pytest.fixture
def publisher_for():
    """Publishers on a given Redis; their clients are closed at teardown."""
    clients: list[redis.Redis] = []

    def make(url: str) -> Publisher:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=0.5)
        clients.append(client)
        return Publisher(client)

    yield make
    for client in clients:
        client.close()


@pytest.mark.gen_test(timeout=120)
async def test_redis_killed_and_restarted_while_1000_notifications_flow(
    ws_connect, db, alice, own_redis, tmp_path, publisher_for
):
    server: Server = own_redis["server"]
    port = int(server.url.rsplit(":", 1)[1])
    sock = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), publisher_for(server.url))
    thread, created = numbered_notes(service, alice.user_id, 1000)
    thread.start()
    loop = asyncio.get_running_loop()
    got = await collect(sock, 200, timeout=30)

    server.process.kill()  # no goodbye: like a crash
    await loop.run_in_executor(None, server.process.wait)
    restarted = await loop.run_in_executor(
        None, lambda: start_redis(tmp_path / "redis", tmp_path / "redis.log", port=port)
    )
    own_redis["server"] = restarted

    got += await collect(sock, 800, timeout=60)
    await loop.run_in_executor(None, thread.join)
    assert len(created) == 1000
    assert got == created  # every one, once, in order


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_subscription_is_resubscribed_and_filled(
    ws_connect, db, alice, own_redis, publisher_for
):
    url = own_redis["server"].url
    sock = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), publisher_for(url))
    first = service.notify(
        alice.user_id, "system-message", {"message": "before", "severity": "info"}
    )
    assert await collect(sock, 1) == [first["data"]["notification_id"]]
    admin = redis.Redis.from_url(url)
    assert admin.client_kill_filter(_type="pubsub") >= 1
    # Published while the subscriber is away: nobody hears it on the bus.
    missed = service.notify(
        alice.user_id, "system-message", {"message": "during", "severity": "info"}
    )
    assert await collect(sock, 1) == [missed["data"]["notification_id"]]
    admin.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_subscriber_cut_off_by_the_output_buffer_limit_is_filled(
    ws_connect, db, alice, own_redis, publisher_for
):
    from notifier.realtime import bus

    url = own_redis["server"].url
    admin = redis.Redis.from_url(url)
    admin.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    subscriber_before = {c["id"] for c in admin.client_list(_type="pubsub")}
    sock = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), publisher_for(url))
    # A burst far bigger than the subscriber's allowed backlog, with alice's notification
    # in the middle of it: Redis drops the subscriber, and that event with it.
    pipe = admin.pipeline(transaction=False)
    for i in range(5):
        pipe.publish(
            bus.BROADCAST,
            announcement_message(
                {
                    "id": f"burst{i}",
                    "message": "x" * 2_000_000,
                    "severity": "info",
                    "created_at": "now",
                }
            ),
        )
    await asyncio.get_running_loop().run_in_executor(None, pipe.execute)
    doc = service.notify(
        alice.user_id, "system-message", {"message": "amid the burst", "severity": "info"}
    )
    await asyncio.get_running_loop().run_in_executor(None, pipe.execute)  # (the same burst again)
    got = []
    while not got:
        msg = await sock.recv_json(30)
        if (
            msg["type"] == "system-message"
            and msg["data"].get("id") == doc["data"]["notification_id"]
        ):
            got.append(msg)
    subscriber_after = {c["id"] for c in admin.client_list(_type="pubsub")}
    assert subscriber_after and not subscriber_after & subscriber_before  # it was cut and came back
    admin.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_logout_while_redis_is_down_revokes_tokens_and_sockets_once_it_is_back(
    fetch, ws_connect, alice, own_redis, tmp_path
):
    """Redis comes back with the old token version still cached, and the logout event was
    never published: the revoked token is refused anyway and its socket is closed."""
    server: Server = own_redis["server"]
    port = int(server.url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    _, browser = await login(fetch, alice.username, alice.password)
    live = await ws_connect(f"?format=json&token={alice.token}")
    assert (await fetch("/api/me", headers=alice.auth)).code == 200  # version 0, cached

    server.process.kill()  # its append-only file keeps that cached version
    await loop.run_in_executor(None, server.process.wait)
    out = await fetch("/logout", "POST", "", headers=browser)
    assert out.code == 303 and out.headers["Location"] == "/login"
    own_redis["server"] = await loop.run_in_executor(
        None, lambda: start_redis(tmp_path / "redis", tmp_path / "redis.log", port=port)
    )

    code, _ = await live.closed()  # when the web process joins the bus again
    assert code == LOGGED_OUT.code
    assert (await fetch("/api/me", headers=alice.auth)).code == 401
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(f"?format=json&token={alice.token}")
    assert refused.value.code == 401


@pytest.mark.gen_test(timeout=60)
async def test_redis_down_is_a_503_not_a_500(fetch, admin, own_redis):
    """Broadcasting an announcement needs the bus: with Redis gone it is a 503 naming it."""
    server: Server = own_redis["server"]
    server.process.kill()
    await asyncio.get_running_loop().run_in_executor(None, server.process.wait)
    body = {"message": "while redis is down", "severity": "info"}
    answer = await fetch("/api/announcements", "POST", body, headers=admin.auth)
    assert answer.code == 503 and answer.headers["Retry-After"] == "5"
    assert json.loads(answer.body)["error"] == {
        "code": "unavailable",
        "message": "Redis is unavailable; try again shortly",
    }


@pytest.mark.gen_test(timeout=60)
async def test_the_task_queue_out_of_reach_at_its_first_send_is_a_503_not_a_500(app, fetch, admin):
    """Celery is imported by the first send (web/taskqueue.py): when that send cannot reach
    the broker, the answer is still a 503 naming the task queue."""
    app.settings["tasks"] = TaskQueue("redis://127.0.0.1:1/0")  # nothing listens on port 1
    answer = await fetch("/api/deal-checks", "POST", {}, headers=admin.auth)
    assert answer.code == 503 and answer.headers["Retry-After"] == "5"
    assert json.loads(answer.body)["error"] == {
        "code": "unavailable",
        "message": "the task queue is unavailable; try again shortly",
    }
