"""Fixtures: real servers started once per session, a real app per test.

SecantusDB and redis-server run as processes on free ports, a real Celery worker runs as
a subprocess against them, and each test gets the Tornado app on its own IOLoop with
`fetch` and `ws_connect` helpers that close what they opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery
from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClientConnection, websocket_connect

from notifier.accounts.auth import issue_token
from notifier.accounts.users import create_user
from notifier.dev.embedded import (
    Server,
    database_uri,
    free_port,
    start_mongo,
    start_redis,
    stop,
    worker_argv,
)
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import Publisher
from notifier.realtime.publishing import NotificationService
from notifier.realtime.registry import ConnectionRegistry
from notifier.settings import Settings
from notifier.shopping.deals import DealCheck
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply
from web.app import live_path, make_app, mongo_client
from web.serve import stop_tasks

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "x" * 40

# CI replays the same generated examples every run (reproducible); locally each run
# explores new ones.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def mongo_server(var_dir: Path) -> Iterator[Server]:
    server = start_mongo(var_dir / "mongo", var_dir / "mongo.log", test_commands=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(var_dir: Path) -> Iterator[Server]:
    server = start_redis(var_dir / "redis", var_dir / "redis.log")
    yield server
    server.stop()


class Mailbox:
    """What a real SMTP server (aiosmtpd) received; tests wait on it."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.changed = threading.Condition()
        self.refuse_once: set[str] = set()  # addresses whose next message gets a 451
        self.refused: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if msg["To"] in self.refuse_once:
            self.refuse_once.discard(msg["To"])
            self.refused.append(msg["To"])
            return "451 4.3.0 Try again later"
        with self.changed:
            self.messages.append(msg)  # type: ignore[arg-type]
            self.changed.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30) -> list[Any]:
        """Block until `address` has at least `count` messages (run it in an executor)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.to(address)) >= count, timeout)
        assert ok, f"{address} got {len(self.to(address))} of {count} email(s)"
        return self.to(address)


@pytest.fixture(scope="session")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server on a free port."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="session")
def env(
    mongo_server: Server, redis_server: Server, var_dir: Path, mailbox: tuple[Mailbox, int]
) -> dict[str, str]:
    """The environment every process of the system under test gets."""
    return {
        "SMTP_URL": f"smtp://127.0.0.1:{mailbox[1]}",
        "NOTIFIER_ENV": "development",
        "MONGODB_URI": database_uri(mongo_server, "notifier_test"),
        "REDIS_URL": f"{redis_server.url}/0",
        "JWT_SECRET": JWT_SECRET,
        "VAR_DIR": str(var_dir),
        "DEMO_PASSWORD": "demo-test",
        "WS_PING_INTERVAL": "30",
        # Small chunks: every check with a few watchers is shared out as several tasks.
        "DEAL_CHECK_CHUNK_USERS": "2",
        # Offline email waits this long for a page to acknowledge a deal (60 s by default).
        "EMAIL_ACK_WAIT": "5",
        # One deal email per user per 30 minutes by default; the tests that count emails
        # per deal need none (tests/test_email_interval.py gives the interval its own tests).
        "EMAIL_MIN_INTERVAL": "0",
        # `make test` runs the live-path tests once more with WS_TRANSPORT=stock.
        "WS_TRANSPORT": os.environ.get("WS_TRANSPORT", "auto"),
    }


@pytest.fixture(scope="session")
def config(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def db(config: Settings) -> Iterator[Any]:
    """A synchronous handle on the test database, for setting up and checking."""
    client: MongoClient[dict[str, Any]] = MongoClient(config.mongodb_uri)
    database = client.get_default_database()
    ensure_indexes(database)
    yield database
    client.close()


@pytest.fixture(scope="session")
def sync_redis(config: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(config.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_metrics_port() -> int:
    """Where the session's Celery worker serves its Prometheus metrics."""
    return free_port()


def wait_worker_ready(broker: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the worker answers a ping on `broker`; raise with its log if it died."""
    control = Celery(broker=broker, set_as_current=False)
    try:
        for _ in range(60):  # each ping waits up to a second for the worker's reply
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            if control.control.ping(timeout=1.0):
                return
        raise RuntimeError(f"the Celery worker ({log.name}) did not answer pings within 60 s")
    finally:
        control.close()


def start_worker(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A Celery worker process appending its output to `log` (a pipe could fill and block it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def celery_worker(
    argv: list[str], env: dict[str, str], broker: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker process, answering pings on `broker`, stopped on the way out."""
    proc = start_worker(argv, env, log)
    try:
        wait_worker_ready(broker, proc, log)
        yield proc
    finally:
        stop(proc, 20)


@pytest.fixture(scope="session")
def worker(
    env: dict[str, str], config: Settings, var_dir: Path, worker_metrics_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the test broker."""
    worker_env = {**env, "WORKER_METRICS_PORT": str(worker_metrics_port)}
    with celery_worker(worker_argv(), worker_env, config.redis_url, var_dir / "worker.log") as proc:
        yield proc


@pytest.fixture(autouse=True)
def announcements_settle(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that broadcast announcements ends once the worker copied them into every
    user's history: that is a write per user of the test database, whose load must not
    land on the next test. (Only where the worker runs: a test that posts announcements
    asks for it.)"""
    if "worker" not in request.fixturenames:
        yield
        return
    from notifier.notifications.announcements import history_done
    from tests.helpers import wait_stored

    db = request.getfixturevalue("db")
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield
    for made in db.announcements.find({"created_at": {"$gte": started}}, {"_id": 1}):
        wait_stored(
            db.announcements,
            lambda made=made: history_done(db.announcements.find_one({"_id": made["_id"]})),
            "an announcement's history copies were never all stored",
            timeout=120,
        )


@dataclass
class User:
    """A user made for one test, with a token."""

    user_id: str
    username: str
    password: str
    role: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(db: Any, config: Settings) -> Callable[..., User]:
    """Create a user with a unique name (tests share one database)."""

    def make(role: str = "shopper", prefix: str = "user", ttl: int = 3600) -> User:
        username = f"{prefix}-{uuid.uuid4().hex[:10]}"
        password = "pw-" + uuid.uuid4().hex[:8]
        apply(db, [create_user(username, password, role, f"{username}@example.test")])
        user_id = str(db.users.find_one({"username": username})["_id"])
        token = issue_token(config.jwt_secret, user_id, username, role, ttl)
        return User(user_id, username, password, role, token)

    return make


@pytest.fixture
def alice(make_user: Callable[..., User]) -> User:
    return make_user(prefix="alice")


@pytest.fixture
def bob(make_user: Callable[..., User]) -> User:
    return make_user(prefix="bob")


@pytest.fixture
def admin(make_user: Callable[..., User]) -> User:
    return make_user(role="admin", prefix="admin")


@pytest.fixture
def item() -> str:
    """An item name no other test uses, so deals never cross tests."""
    return f"Oat milk {uuid.uuid4().hex[:8]}"


@pytest.fixture
def app_config(config: Settings) -> Settings:
    """The settings the test's app runs with (a test module may override this)."""
    return config


@pytest.fixture
def listen_options() -> dict[str, float]:
    """Keyword arguments for the app's bus subscriber (a test module may override this)."""
    return {}


@pytest.fixture
def app(
    io_loop: IOLoop, app_config: Settings, redis_server: Server, listen_options: dict[str, float]
) -> Iterator[Any]:
    """The real Application on this test's loop, with its Redis subscriber running."""
    config = app_config
    mongo = mongo_client(config)  # the web process's, with its timeouts
    aredis = aioredis.Redis.from_url(config.redis_url)
    registry = ConnectionRegistry()
    application = make_app(config, mongo.get_default_database(), aredis, registry, "test:1")
    subscriber = live_path(application, **listen_options)

    async def start() -> asyncio.Task[None]:
        task = asyncio.create_task(subscriber.run())
        await asyncio.wait_for(subscriber.wait_joined(), 10)
        return task

    task = io_loop.run_sync(start)
    yield application

    async def stop() -> None:
        registry.close_all(1001, "test over")
        await stop_tasks([task], 5)
        await application.settings["seen_marks"].flush()
        await aredis.aclose()
        await application.settings["link"].aclose()
        await mongo.close()

    io_loop.run_sync(stop)


Fetch = Callable[..., Awaitable[HTTPResponse]]


@pytest.fixture
def fetch(http_client: AsyncHTTPClient, base_url: str) -> Fetch:
    """Request a path of the test server; never raises for 4xx/5xx."""

    def do(
        path: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> Awaitable[HTTPResponse]:
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request = HTTPRequest(
            base_url + path,
            method=method,
            body=body,
            headers=headers or {},
            follow_redirects=follow_redirects,
        )
        return http_client.fetch(request, raise_error=False)

    return do


class Socket:
    """A test WebSocket client that reads with a timeout and decodes JSON envelopes."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn

    async def recv(self, timeout: float = 10.0) -> str | None:
        return await asyncio.wait_for(self.conn.read_message(), timeout)  # type: ignore[return-value]

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await self.recv(timeout)
        assert raw is not None, f"socket closed ({self.conn.close_code} {self.conn.close_reason})"
        return json.loads(raw)

    async def recv_type(
        self, type_: str, timeout: float = 10.0, skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The next envelope not of a type in `skip`; it must be of this type."""
        msg = await self.recv_json(timeout)
        while msg["type"] in skip:
            msg = await self.recv_json(timeout)
        assert msg["type"] == type_, msg
        return msg

    def send_json(self, value: Any) -> None:
        self.conn.write_message(json.dumps(value))

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Wait until the server closes the socket; returns (code, reason)."""
        while await self.recv(timeout) is not None:
            pass
        return self.conn.close_code, self.conn.close_reason


WsConnect = Callable[..., Awaitable[Socket]]


@pytest.fixture
def ws_connect(http_server: Any, base_url: str) -> Iterator[WsConnect]:
    """Open /ws sockets; all are closed at teardown."""
    opened: list[WebSocketClientConnection] = []
    ws_base = base_url.replace("http://", "ws://")

    async def connect(
        query: str = "", headers: dict[str, str] | None = None, established: bool = True
    ) -> Socket:
        request = HTTPRequest(f"{ws_base}/ws{query}", headers=headers or {})
        conn = await websocket_connect(request)
        opened.append(conn)
        sock = Socket(conn)
        if established and "format=html" not in query:
            await sock.recv_type("connection-established")
        return sock

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def iostream_as_found() -> Iterator[None]:
    """Leave Tornado's IOStream patched, or not, as the test found it."""
    from tornado import iostream

    from web.lean import lazy_stream_buffers, undo_lazy_stream_buffers

    patched = getattr(iostream.BaseIOStream, "_lean", False)
    yield
    if not patched:
        undo_lazy_stream_buffers()
    elif not getattr(iostream.BaseIOStream, "_lean", False):
        lazy_stream_buffers()


@pytest.fixture
def check(db: Any, sync_redis: redis.Redis) -> Any:
    """A deal check that stores in the session's MongoDB and publishes on its Redis."""
    return DealCheck(db, NotificationService(NotificationWriter(db), Publisher(sync_redis)))
