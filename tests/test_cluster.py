"""REDIS_CLUSTER_URL: the bus as sharded pub/sub on a 3-node Redis Cluster on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from notifier.dev.embedded import Server, free_port, start_redis_cluster
from notifier.notifications.store import NotificationWriter
from notifier.realtime import bus
from notifier.realtime.events import LogoutEvent
from notifier.realtime.publishing import NotificationService
from notifier.realtime.subscriber import Subscriber, Topology
from tests.helpers import read_until, resubscriptions_while_idle, spawn, wait_subscribed


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three redis-server nodes joined by redis-cli --cluster create, no replicas."""
    nodes = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    for node in nodes:
        node.stop()


def owner_of(nodes: list[Server], channel: str) -> tuple[Server, list[Server]]:
    """The node whose shard owns a channel, and the others."""
    client = RedisCluster.from_url(nodes[0].url)
    try:
        port = int(client.get_node_from_key(channel).port)
    finally:
        client.close()
    owner = next(n for n in nodes if n.url.endswith(f":{port}"))
    return owner, [n for n in nodes if n is not owner]


def subscribers(node: Server, channel: str, kind: str) -> int:
    """How many clients of this node subscribe to a channel (shard or classic)."""
    client = redis.Redis.from_url(node.url)
    try:
        numsub = client.pubsub_shardnumsub if kind == "shard" else client.pubsub_numsub
        return int(dict(numsub(channel))[channel.encode()])
    finally:
        client.close()


def test_the_cluster_fixture_has_three_masters_covering_every_slot(redis_cluster):
    client = redis.Redis.from_url(redis_cluster[0].url)
    info = client.execute_command("CLUSTER INFO")
    client.close()
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_known_nodes"]) == 3 and int(info["cluster_slots_assigned"]) == 16384


@pytest.mark.gen_test(timeout=30)
async def test_user_channels_travel_by_spublish_and_ssubscribe_on_their_shards(
    redis_cluster, config
):
    settings = dataclasses.replace(config, redis_cluster_url=redis_cluster[1].url)
    client = bus.async_client(settings, None)  # type: ignore[arg-type]
    assert isinstance(client, AsyncRedisCluster)
    got: list[LogoutEvent] = []
    arrived = asyncio.Event()

    def handle(event: LogoutEvent) -> None:
        got.append(event)
        arrived.set()

    subscriber = Subscriber(Topology(config.redis_url, settings.redis_cluster_url), handle)
    task = asyncio.create_task(subscriber.run())
    publisher = bus.make_publisher(settings)
    users = [str(i) for i in range(12)]  # on every shard, most likely
    try:
        await asyncio.wait_for(subscriber.wait_joined(), 10)
        assert subscriber.state.live(asyncio.get_running_loop().time())
        await asyncio.gather(*(subscriber.hold(u) for u in users))
        for channel in (bus.BROADCAST, *map(bus.user_channel, users)):
            # Each subscription is a shard channel on the owning node, and only there.
            owner, others = owner_of(redis_cluster, channel)
            assert subscribers(owner, channel, "shard") == 1
            assert subscribers(owner, channel, "classic") == 0
            assert [subscribers(other, channel, "shard") for other in others] == [0, 0]
        assert publisher.publish(LogoutEvent(user_id="1")) == 1  # worker side (sync)
        await asyncio.wait_for(arrived.wait(), 10)
        arrived.clear()
        assert await bus.publish_async(client, LogoutEvent(user_id="2")) == 1  # web side
        await asyncio.wait_for(arrived.wait(), 10)
        publisher.publish_many([LogoutEvent(user_id=u) for u in users])  # pipelined by shard
        while len(got) < 2 + len(users):
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 10)
        # Order holds per user (a user's channel is on one shard), not across shards.
        assert [e.user_id for e in got[:2]] == ["1", "2"]
        assert sorted(e.user_id for e in got[2:]) == sorted(users)
        assert publisher.publish(LogoutEvent(user_id="not held here")) == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        publisher._redis.close()


@pytest.mark.timeout(90)
def test_a_web_process_on_the_cluster_delivers_to_its_sockets(
    redis_cluster, env, config, db, alice, io_loop
):
    port = free_port()
    cluster_url = redis_cluster[2].url
    proc = spawn(
        [sys.executable, "-m", "web"], {**env, "PORT": str(port), "REDIS_CLUSTER_URL": cluster_url}
    )
    settings = dataclasses.replace(config, redis_cluster_url=cluster_url)
    service = NotificationService(NotificationWriter(db), bus.make_publisher(settings))

    async def scenario() -> None:
        http = AsyncHTTPClient()
        ready = await http.fetch(f"http://127.0.0.1:{port}/readyz", raise_error=False)
        assert ready.code == 200
        assert json.loads(ready.body)["checks"]["redis_cluster"] == "ok"
        conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws?format=json&token={alice.token}")
        assert json.loads(await conn.read_message())["type"] == "connection-established"
        created = [
            service.notify(
                alice.user_id, "system-message", {"message": f"#{i}", "severity": "info"}
            )["data"]["notification_id"]
            for i in range(20)
        ]
        got = []
        while len(got) < 20:
            msg = json.loads(await asyncio.wait_for(conn.read_message(), 10))
            if msg["type"] == "system-message":
                got.append(msg["data"]["id"])
        assert got == created
        # Read marks are published by the web process itself: through the cluster too.
        response = await http.fetch(
            f"http://127.0.0.1:{port}/api/notifications/read",
            method="POST",
            body=json.dumps({"all": True}),
            headers=alice.auth,
        )
        assert json.loads(response.body) == {"unread_count": 0}
        while (msg := json.loads(await asyncio.wait_for(conn.read_message(), 10)))["type"] != (
            "notification-read"
        ):
            pass
        assert msg["data"]["unread_count"] == 0
        conn.close()

    try:
        seen: list[str] = []
        read_until(proc, f"listening on port {port}", 30, seen)
        wait_subscribed(proc, seen)  # its subscriber has joined the cluster
        io_loop.run_sync(scenario, timeout=60)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


@pytest.mark.gen_test(timeout=60)
async def test_a_healthy_idle_sharded_subscription_is_kept(redis_cluster):
    topology = Topology(redis_cluster[0].url, redis_cluster[0].url)
    assert await resubscriptions_while_idle(topology) == 0
