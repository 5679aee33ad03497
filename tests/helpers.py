"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, MongoClient, monitoring
from tornado.httpclient import HTTPResponse

import web.app
from notifier.dev.embedded import Server, free_port
from notifier.realtime import bus
from notifier.realtime.render import PayloadRenderer
from tests.conftest import ROOT

RENDERER = PayloadRenderer()
L = TypeVar("L", bound=monitoring.CommandListener)


class CommandLog(monitoring.CommandListener):
    """The commands a MongoClient had answered, in order: (command, collection, returned).

    `returned` is how many documents a find gave in its first batch (None for the rest);
    `events` is shared, so a test can put its own entries between the commands.
    """

    def __init__(self, events: list[tuple[str, Any, Any]] | None = None) -> None:
        self.events = [] if events is None else events
        self._started: dict[int, tuple[str, Any]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self._started[event.request_id] = (
            event.command_name,
            event.command.get(event.command_name),
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        name, collection = self._started.pop(event.request_id, (event.command_name, None))
        batch = event.reply.get("cursor", {}).get("firstBatch")
        self.events.append((name, collection, None if batch is None else len(batch)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._started.pop(event.request_id, None)


@contextlib.contextmanager
def logged_db(uri: str, log: CommandLog) -> Iterator[Any]:
    """The database of `uri` through a client of its own whose commands go to `log`."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[log])
    try:
        yield client.get_default_database()
    finally:
        client.close()


def listen_to_app_mongo(monkeypatch: Any, listener: L) -> L:
    """The app's MongoDB client (web/app.py builds it) reports its commands to `listener`."""
    monkeypatch.setattr(
        web.app, "AsyncMongoClient", functools.partial(AsyncMongoClient, event_listeners=[listener])
    )
    return listener


def announcement_message(announcement: dict[str, Any]) -> bytes:
    """An announcement as the bus carries it, both formats rendered as a writer does."""
    return bus.encode(RENDERER.announcement_event(announcement))


def cookies(response: HTTPResponse) -> SimpleCookie:
    """Every Set-Cookie of a response."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return jar


def set_cookie_header(response: HTTPResponse, name: str) -> str:
    """The raw Set-Cookie header for one cookie."""
    return next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(name + "="))


async def browser_session(fetch: Any) -> tuple[str, str]:
    """What a browser holds after GET /login: (Cookie header value, the form's _xsrf)."""
    page = await fetch("/login")
    xsrf_cookie = cookies(page)["_xsrf"].value
    form_token = re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode())
    assert form_token, "the login form must carry an _xsrf field"
    return f"_xsrf={xsrf_cookie}", form_token.group(1)


async def login(fetch: Any, username: str, password: str) -> tuple[HTTPResponse, dict[str, str]]:
    """Log in through the form; returns the response and headers a browser would send next."""
    cookie, xsrf = await browser_session(fetch)
    body = urllib.parse.urlencode({"_xsrf": xsrf, "username": username, "password": password})
    response = await fetch("/login", "POST", body, headers={"Cookie": cookie})
    jar = cookies(response)
    headers = {"Cookie": cookie, "X-XSRFToken": xsrf}
    if "accessToken" in jar and jar["accessToken"].value:
        headers["Cookie"] = f"{cookie}; accessToken={jar['accessToken'].value}"
    return response, headers


def form(**fields: Any) -> str:
    """A urlencoded form body (lists repeat the field)."""
    return urllib.parse.urlencode(fields, doseq=True)


def read_until(proc: subprocess.Popen, needle: str, timeout: float, seen: list[str]) -> str:
    """Read the process's output line by line until a line contains `needle`."""
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                break
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                break  # the process closed its output
            seen.append(line)
            if needle in line:
                return line
    finally:
        sel.close()
    raise AssertionError(f"{needle!r} never appeared; output:\n{''.join(seen)[-3000:]}")


def wait_subscribed(proc: subprocess.Popen, seen: list[str]) -> None:
    """Wait until a web process says it (re)joined the bus, unless `seen` already has it.

    `seen` is the output read so far; it is cleared, so the next wait is for the next time.
    """
    if not any("subscribed to the bus" in line for line in seen):
        read_until(proc, "subscribed to the bus", 30, seen)
    seen.clear()


def spawn(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
    """Start a process whose output `read_until` can follow.

    Its output is unbuffered on our side: a buffered reader would take several lines in
    one read and leave read_until's select() waiting for a line it already holds.
    """
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        bufsize=0,
    )


def reap(proc: subprocess.Popen) -> None:
    """Kill a process `spawn` started if it is still running, and close its output."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def numbered_notes(service: Any, user_id: str, count: int) -> tuple[threading.Thread, list[str]]:
    """A thread (not yet started) that stores system messages #0..#count-1 for the user one
    at a time through `service`, and the list that fills with their ids in order."""
    created: list[str] = []

    def publish() -> None:
        for i in range(count):
            doc = service.notify(
                user_id, "system-message", {"message": f"#{i}", "severity": "info"}
            )
            created.append(doc["data"]["notification_id"])

    return threading.Thread(target=publish), created


async def collect(sock, count, timeout=20):
    """The next `count` notification envelopes (other types are skipped)."""
    got = []
    while len(got) < count:
        msg = await sock.recv_json(timeout)
        if msg["type"] in ("deal-notification", "system-message", "job-complete"):
            got.append(msg["data"]["id"])
    return got


async def one_loop_turn() -> None:
    """Let the callbacks already scheduled on the loop run (no timed wait)."""
    turned = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turned.set_result, None)
    await turned


async def tick_until_dropped(registry, sync_redis, user_id: str, healthy, most: int) -> None:
    """Broadcast numbered announcements until `user_id` holds no socket (a send is where a
    broken one is noticed); `healthy`, another user's JSON socket, gets every one in turn."""
    tick = 0
    while registry.connections_for_user(user_id):
        tick += 1
        assert tick < most, f"{user_id}'s socket was never dropped"
        sync_redis.publish(
            bus.BROADCAST,
            announcement_message(
                {
                    "id": f"tick{tick}",
                    "message": f"tick {tick}",
                    "severity": "info",
                    "created_at": "now",
                }
            ),
        )
        assert (await healthy.recv_json())["data"]["message"] == f"tick {tick}"
        await one_loop_turn()


async def watch(fetch, user, item, target=None):
    body = {"item_name": item} | ({"target_price_in_cents": target} if target else {})
    response = await fetch("/api/watchlist", "POST", body, headers=user.auth)
    assert response.code == 201, response.body


async def watchlist(fetch, user) -> list[dict[str, Any]]:
    """The user's watches as GET /api/watchlist lists them."""
    return json.loads((await fetch("/api/watchlist", headers=user.auth)).body)["items"]


async def announce(fetch, admin, message, severity="info"):
    """The admin posts an announcement; the API accepts it (202). Returns its answer."""
    body = {"message": message, "severity": severity}
    response = await fetch("/api/announcements", "POST", body, headers=admin.auth)
    assert response.code == 202, response.body
    return json.loads(response.body)


async def post_price(fetch, admin, item, price=199, regular=299, store="Fresh Mart"):
    body = {
        "store_name": store,
        "item_name": item,
        "price_in_cents": price,
        "regular_price_in_cents": regular,
    }
    response = await fetch("/api/prices", "POST", body, headers=admin.auth)
    assert response.code == 201, response.body
    return json.loads(response.body)["price_id"]


async def deal_on_socket(fetch, ws_connect, user, admin, item):
    """The user watches `item`, a price makes it a deal: the user's JSON socket and the
    deal notification it received."""
    await watch(fetch, user, item)
    sock = await ws_connect(f"?format=json&token={user.token}")
    await post_price(fetch, admin, item)
    return sock, await sock.recv_type("deal-notification", timeout=20)


async def acknowledge(sock, last_id: str) -> None:
    """Acknowledge up to `last_id` as the page does; the pong after it says the server has
    handled the ack (a socket's messages are handled one at a time)."""
    sock.send_json({"type": "ack", "last_id": last_id})
    sock.send_json({"type": "ping"})
    await sock.recv_type("pong")


class WebProcess:
    """`python -m web` on a fixed port, stopped and started at will.

    `python` and `cwd` run another installation (tests/test_install.py), not this tree.
    """

    def __init__(self, env: dict[str, str], python: str = sys.executable, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), "BASE_URL": f"http://127.0.0.1:{self.port}"}
        self.python, self.cwd = python, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = spawn([self.python, "-m", "web"], self.env, self.cwd)
        # Keep reading its log, or a full pipe would stop the process mid-write.
        self.output: collections.deque[bytes] = collections.deque(maxlen=200)
        self._reader = threading.Thread(
            target=self.output.extend, args=(self.proc.stdout,), daemon=True
        )
        try:
            read_until(self.proc, f"listening on port {self.port}", 30, [])
        finally:
            self._reader.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self._reader.join(timeout=5)  # it ends at the end of the output
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None


async def resubscriptions_while_idle(topology: Any, dead_after: float = 1.0) -> int:
    """How often a Subscriber joins the bus again while nothing is published for 3
    dead_afters. A live link answers every PING, so a healthy idle one is never given up.
    """
    from notifier.realtime.subscriber import Subscriber

    joined: asyncio.Queue[None] = asyncio.Queue()

    async def on_joined() -> None:
        joined.put_nowait(None)

    subscriber = Subscriber(
        topology, lambda event: None, on_joined, ping_every=dead_after / 5, dead_after=dead_after
    )
    task = asyncio.create_task(subscriber.run())
    try:
        await asyncio.wait_for(joined.get(), 10)
        try:  # nothing should come: waiting out the time is the point
            await asyncio.wait_for(joined.get(), 3 * dead_after)
        except TimeoutError:
            return 0
        return 1 + joined.qsize()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def raw_ws_open(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A JSON socket opened by hand: the test decides when (and whether) to read it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws?format=json&token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


def wait_stored(collection: Any, holds: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Block until `holds()` is true of what is stored, checking again at each write.

    The writes are the events: a change stream on the collection wakes this at each one
    (opened before the first check, so a write in between is not missed). Run it in an
    executor from async tests.
    """
    deadline = time.monotonic() + timeout
    with collection.watch(max_await_time_ms=250) as changes:
        while not holds():
            assert time.monotonic() < deadline, what
            changes.try_next()  # the next write, or nothing within 250 ms


def wait_announcement_stored(db: Any, user_id: str, message: str, timeout: float = 30) -> None:
    """Block until a worker stored and published the user's copy of an announcement.

    A chunk's outbox record is written before its notifications and deleted once they
    are published, so the outbox's writes are the events to wait on.
    """
    query = {"user_id": user_id, "type": "system-message", "data.message": message}

    def published() -> bool:
        copy = db.notifications.find_one(query, {"_id": 1})
        return copy is not None and db.outbox.find_one({"ids": copy["_id"]}) is None

    wait_stored(db.outbox, published, f"no copy of the announcement {message!r} published", timeout)


def wait_email_decided(db: Any, user_id: str, timeout: float = 30) -> None:
    """Block until none of the user's deal notifications waits for its email decision."""
    query = {"user_id": user_id, "email_pending": True}
    wait_stored(
        db.notifications,
        lambda: not db.notifications.count_documents(query),
        "the email was never decided",
        timeout,
    )


def assert_no_email(db: Any, mailbox: Any, user: Any) -> None:
    """Once the user's deal notifications are decided: no email planned, none delivered."""
    wait_email_decided(db, user.user_id)
    assert db.emails.count_documents({"user_id": user.user_id}) == 0
    assert mailbox.to(f"{user.username}@example.test") == []


def wait_email_status(db: Any, email_id: str, status: str, timeout: float = 30) -> None:
    """Block until the planned email has this status."""
    wait_stored(
        db.emails,
        lambda: (db.emails.find_one({"_id": email_id}) or {}).get("status") == status,
        f"email {email_id} never became {status}",
        timeout,
    )


@contextlib.contextmanager
def restartable(start: Callable[..., Server], folder: Path) -> Iterator[dict[str, Server]]:
    """A server of the test's own (`box["server"]`) that it may stop or kill and start
    again with `start(folder, log, port=...)`: same port, same data; stopped at the end."""
    box = {"server": start(folder, folder.with_suffix(".log"))}
    try:
        yield box
    finally:
        box["server"].stop()
