"""A subscription that goes silent without closing (half-open) is detected and replaced."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from notifier.dev.embedded import free_port
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.realtime.subscriber import Topology
from tests.helpers import collect, resubscriptions_while_idle


class FreezingProxy:
    """A TCP proxy to Redis that can stop forwarding without closing (a half-open link)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.frozen: list[asyncio.StreamWriter] = []
        self.freeze_now = False
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        links = [(reader, up_writer), (up_reader, writer)]
        generation = self.freeze_generation

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if self.freeze_generation != generation:
                    return  # swallow everything from now on, keep the socket open
                dst.write(data)
                await dst.drain()

        self.frozen += [writer, up_writer]
        await asyncio.gather(*(pump(s, d) for s, d in links), return_exceptions=True)

    freeze_generation = 0

    def freeze(self) -> None:
        """Existing connections go silent; new ones work."""
        self.freeze_generation += 1

    async def close(self) -> None:
        self.server.close()
        for w in self.frozen:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in self.frozen), return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
def proxy(io_loop, redis_server):
    p = FreezingProxy(int(redis_server.url.rsplit(":", 1)[1]))
    io_loop.run_sync(p.start)
    yield p
    io_loop.run_sync(p.close)


@pytest.fixture
def app_config(config, proxy):
    return dataclasses.replace(config, redis_url=f"redis://127.0.0.1:{proxy.port}/0")


@pytest.fixture
def listen_options():
    return {"ping_every": 0.2, "dead_after": 1.0, "max_backoff": 0.5}


@pytest.mark.gen_test(timeout=60)
async def test_a_frozen_subscription_is_detected_and_filled(
    ws_connect, db, sync_redis, alice, proxy
):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    service = NotificationService(NotificationWriter(db), Publisher(sync_redis))
    first = service.notify(
        alice.user_id, "system-message", {"message": "before", "severity": "info"}
    )
    assert await collect(sock, 1) == [first["data"]["notification_id"]]
    before = proxy.connections
    proxy.freeze()  # the subscriber's TCP connection stays open but carries nothing
    missed = service.notify(
        alice.user_id, "system-message", {"message": "during", "severity": "info"}
    )
    assert await collect(sock, 1) == [missed["data"]["notification_id"]]
    assert proxy.connections > before  # it noticed the silence and connected again


@pytest.mark.gen_test(timeout=30)
async def test_a_healthy_idle_subscription_is_kept(redis_server):
    assert await resubscriptions_while_idle(Topology(redis_server.url)) == 0
