"""WEB_CONCURRENCY: several web processes on one port, each hearing only its own users.

Two processes of `python -m web` share a port; a user's sockets land on both. Every
socket gets each of the user's notifications exactly once and in order: live, through a
Redis restart, and after the user's last socket left (its channel unsubscribed on both
processes) and came back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import WebSocketClientConnection, websocket_connect

from notifier.dev.embedded import free_port, start_redis
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher, user_channel
from notifier.realtime.fanout import METRICS_EVERY
from notifier.realtime.publishing import NotificationService
from notifier.realtime.socket_limit import KEY as SOCKETS_KEY
from tests.helpers import read_until, reap, restartable, spawn


def processes_holding(client: redis.Redis, user_id: str) -> set[str]:
    """The web processes (host:pid:port) where the user has a socket (the socket limit's set)."""
    members = client.zrange(SOCKETS_KEY.format(user_id), 0, -1)
    return {m.decode().rsplit(":", 1)[0] for m in members}


async def next_notifications(conn: WebSocketClientConnection, count: int) -> list[str]:
    """The ids of the next `count` notifications, then a pong with nothing between."""
    got: list[str] = []
    while len(got) < count:
        msg = json.loads(await asyncio.wait_for(conn.read_message(), 20))
        if msg["type"] == "system-message":
            got.append(msg["data"]["id"])
    conn.write_message(json.dumps({"type": "ping"}))
    while (msg := json.loads(await asyncio.wait_for(conn.read_message(), 20)))["type"] != "pong":
        assert msg["type"] not in ("system-message", "deal-notification"), f"a repeat: {msg}"
    return got


def unsubscribes(monitor: Any, channel: str, count: int) -> None:
    """Block until Redis has executed `count` UNSUBSCRIBEs naming the channel (MONITOR)."""
    seen = 0
    while seen < count:
        command = monitor.next_command()["command"]
        if command.upper().startswith("UNSUBSCRIBE") and channel in command:
            seen += 1


@pytest.mark.timeout(180)
def test_two_processes_on_one_port_deliver_every_event_once_to_every_socket(
    env: dict[str, str], db: Any, alice: Any, tmp_path: Path, io_loop: Any
) -> None:
    with restartable(start_redis, tmp_path / "redis") as box:
        url = box["server"].url
        redis_port = int(url.rsplit(":", 1)[1])
        port = free_port()
        proc = spawn(
            [sys.executable, "-m", "web"],
            {**env, "PORT": str(port), "REDIS_URL": url + "/0", "WEB_CONCURRENCY": "2"},
        )
        seen: list[str] = []
        control = redis.Redis.from_url(url, socket_timeout=5)
        publishing = redis.Redis.from_url(url, socket_timeout=1)
        service = NotificationService(NotificationWriter(db), Publisher(publishing))

        def notify(n: int) -> list[str]:
            return [
                service.notify(alice.user_id, "system-message", {"message": f"#{i}"})["data"][
                    "notification_id"
                ]
                for i in range(n)
            ]

        def both_joined() -> None:
            read_until(proc, "subscribed to the bus", 30, seen)
            read_until(proc, "subscribed to the bus", 30, seen)

        async def every_socket_gets(socks: list[WebSocketClientConnection], ids: list[str]) -> None:
            got = await asyncio.gather(*(next_notifications(s, len(ids)) for s in socks))
            assert got == [ids] * len(socks)

        async def connect(last_id: str | None = None) -> WebSocketClientConnection:
            query = f"format=json&token={alice.token}" + (f"&last_id={last_id}" if last_id else "")
            conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws?{query}")
            assert json.loads(await conn.read_message())["type"] == "connection-established"
            return conn

        async def scenario() -> list[WebSocketClientConnection]:
            loop = asyncio.get_running_loop()
            socks = [await connect()]
            while len(processes_holding(control, alice.user_id)) < 2:
                assert len(socks) < 20, "every socket landed on one process"
                socks.append(await connect())

            await every_socket_gets(socks, await loop.run_in_executor(None, notify, 3))
            # Whichever process answers /metrics, it sums every process's counters (the
            # other process writes its own within METRICS_EVERY).
            delivered = 'notifier_messages_delivered_total{type="system-message"}'
            deadline = loop.time() + 10 * METRICS_EVERY
            while True:
                scraped = (await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")).body
                lines = scraped.decode().splitlines()
                if f"{delivered} {3.0 * len(socks)}" in lines:
                    break
                assert loop.time() < deadline, [ln for ln in lines if ln.startswith(delivered)]
                await asyncio.sleep(METRICS_EVERY / 5)
            pids = {ln.split('pid="')[1].split('"')[0] for ln in lines if 'pid="' in ln}
            assert len(pids) >= 2  # CPU and memory of each live web process, by pid

            # Redis restarts: the notifications stored meanwhile are filled from MongoDB.
            box["server"].process.kill()
            await loop.run_in_executor(None, box["server"].process.wait)
            missed = await loop.run_in_executor(None, notify, 2)  # stored, not published
            box["server"] = await loop.run_in_executor(
                None, lambda: start_redis(tmp_path / "redis", tmp_path / "redis.log", redis_port)
            )
            await loop.run_in_executor(None, both_joined)
            fresh = await loop.run_in_executor(None, notify, 2)
            await every_socket_gets(socks, missed + fresh)

            # The user's last socket leaves: both processes leave the channel; she comes back.
            with control.monitor() as monitor:
                for sock in socks:
                    sock.close()
                await loop.run_in_executor(
                    None, unsubscribes, monitor, user_channel(alice.user_id), 2
                )
            while_away = await loop.run_in_executor(None, notify, 1)
            back = [await connect(last_id=fresh[-1]) for _ in range(2)]
            await every_socket_gets(back, while_away)  # replayed from MongoDB
            while len(processes_holding(control, alice.user_id)) < 2:
                assert len(back) < 20, "every socket landed on one process"
                back.append(await connect())
            await every_socket_gets(back, await loop.run_in_executor(None, notify, 2))
            return back

        try:
            read_until(proc, f"supervising 2 web processes on port {port}", 30, seen)
            both_joined()
            socks = io_loop.run_sync(scenario, timeout=120)

            async def sigterm() -> set[tuple[int | None, str | None]]:
                proc.send_signal(signal.SIGTERM)
                codes = set()
                for conn in socks:
                    while await asyncio.wait_for(conn.read_message(), 20) is not None:
                        pass
                    codes.add((conn.close_code, conn.close_reason))
                    conn.close()
                return codes

            assert io_loop.run_sync(sigterm, timeout=30) == {(1012, "server restarting")}
            assert proc.wait(30) == 0
        finally:
            reap(proc)
            control.close()
            publishing.close()
