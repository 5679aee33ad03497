"""The Subscriber against a real Redis: a channel per held user, batched, confirmed, left."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from notifier.realtime.bus import Publisher, user_channel
from notifier.realtime.events import Event, LogoutEvent
from notifier.realtime.subscriber import Subscriber, Topology


def commands(monitor: Any, verb: str, until: str) -> list[str]:
    """The commands of this verb that Redis ran, up to one naming `until` (MONITOR)."""
    seen = []
    while True:
        command = monitor.next_command()["command"]
        if command.upper().startswith(verb.upper() + " "):
            seen.append(command)
            if until in command:
                return seen


class Heard:
    """What a Subscriber handed on, and a way to wait for it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()
        self.joins = 0
        self.rejoined = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def joined(self) -> None:
        self.joins += 1
        if self.joins > 1:
            self.rejoined.set()

    async def wait_for(self, count: int) -> list[Event]:
        while len(self.events) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        return self.events


@pytest.fixture
def running(redis_server: Any, io_loop: Any) -> Iterator[tuple[Subscriber, Heard]]:
    """A Subscriber on the test's loop, joined to the bus."""

    async def start() -> tuple[Subscriber, Heard, asyncio.Task[None]]:
        heard = Heard()
        subscriber = Subscriber(
            Topology(redis_server.url), heard, heard.joined, linger=0.2, max_backoff=0.2
        )
        task = asyncio.create_task(subscriber.run())
        await asyncio.wait_for(subscriber.wait_joined(), 10)
        return subscriber, heard, task

    subscriber, heard, task = io_loop.run_sync(start)
    yield subscriber, heard

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    io_loop.run_sync(stop)


def numsub(client: redis.Redis, user: str) -> int:
    return int(dict(client.pubsub_numsub(user_channel(user)))[user_channel(user).encode()])


@pytest.mark.gen_test(timeout=30)
async def test_holds_in_one_turn_are_one_subscribe_confirmed_before_they_return(
    running: tuple[Subscriber, Heard], sync_redis: redis.Redis
) -> None:
    subscriber, heard = running
    loop = asyncio.get_running_loop()
    users = [f"batch-{i}" for i in range(300)]
    with sync_redis.monitor() as monitor:
        await asyncio.gather(*(subscriber.hold(u) for u in users))
        # Confirmed on return: Redis already counts a subscriber on every channel.
        assert {numsub(sync_redis, u) for u in users} == {1}
        sent = await loop.run_in_executor(
            None, commands, monitor, "subscribe", user_channel(users[-1])
        )
    assert len(sent) == 1  # 300 channels, one command
    publisher = Publisher(sync_redis)
    assert publisher.publish(LogoutEvent(user_id="batch-7")) == 1
    assert publisher.publish(LogoutEvent(user_id="not-held")) == 0  # no process hears it
    assert await heard.wait_for(1) == [LogoutEvent(user_id="batch-7")]


@pytest.mark.gen_test(timeout=30)
async def test_a_channel_lingers_after_its_last_socket_and_is_left_after(
    running: tuple[Subscriber, Heard], sync_redis: redis.Redis
) -> None:
    subscriber, heard = running
    loop = asyncio.get_running_loop()
    await subscriber.hold("tab")
    subscriber.release("tab")
    await subscriber.hold("tab")  # a reload within the linger: the channel was never left
    assert numsub(sync_redis, "tab") == 1 and subscriber.holds("tab")
    with sync_redis.monitor() as monitor:
        subscriber.release("tab")
        await loop.run_in_executor(None, commands, monitor, "unsubscribe", user_channel("tab"))
    assert numsub(sync_redis, "tab") == 0 and not subscriber.holds("tab")
    await subscriber.hold("tab")  # back: subscribed again, and hears what comes
    Publisher(sync_redis).publish(LogoutEvent(user_id="tab"))
    assert await heard.wait_for(1) == [LogoutEvent(user_id="tab")]


@pytest.mark.gen_test(timeout=30)
async def test_a_lost_bus_is_joined_again_with_every_channel_held(
    running: tuple[Subscriber, Heard], sync_redis: redis.Redis
) -> None:
    subscriber, heard = running
    users = [f"held-{i}" for i in range(2500)]  # three SUBSCRIBE batches on the way back
    await asyncio.gather(*(subscriber.hold(u) for u in users))
    assert heard.joins == 1
    sync_redis.client_kill_filter(_type="pubsub")
    # on_joined runs once every channel held is confirmed again
    await asyncio.wait_for(heard.rejoined.wait(), 10)
    assert {numsub(sync_redis, u) for u in (users[0], users[1234], users[-1])} == {1}
    Publisher(sync_redis).publish(LogoutEvent(user_id=users[-1]))
    assert await heard.wait_for(1) == [LogoutEvent(user_id=users[-1])]
