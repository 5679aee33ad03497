"""The reconnect storm: a web process holding N sockets gets SIGTERM; they all come back.

N pages (JSON sockets, `sockets_per_user` of them per user) are connected to web process
A; B, `survivors` processes (WEB_CONCURRENCY) on another port, is already running (as
behind a load balancer). A gets
SIGTERM and closes every socket with 1012; each page reconnects as the htmx ws extension
does with `wsReconnectDelay = "full-jitter"` (web/static/app.js): on a close with 1006, 1011,
1012 or 1013 it waits random() * 1 s * 2^min(retries, 6), retries += 1, and tries again;
an open socket resets retries. It resumes with `last_id=` the newest id it holds, as
web/static/app.js does. Meanwhile a separate writer process (`python bench/storm.py write`)
stores one notification for every user through notifier's own NotificationService
(MongoDB first, then Redis, as the worker does), WRITER_BATCH users at a time as a deal
check's live chunks store theirs (BENCH_STORM_WRITER_BATCH=1: one `notify` each, which
took the embedded SecantusDB, on the load generator's core, 53-73 s for 1,000 during the
storm). Measured: the time from the SIGTERM until every page is greeted by B and holds
its user's new notification, with none missing and none twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # run as a script (the writer), notifier must import

from bson import ObjectId  # noqa: E402
from loadgen import FrameReader, until, upgrade_request  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from seed import known_users, store_notifications  # noqa: E402

from notifier.accounts.auth import issue_token  # noqa: E402
from notifier.notifications.store import format_id  # noqa: E402

RECONNECT_CODES = (1006, 1011, 1012, 1013)  # the ext's list: anything else is final
HISTORY = 5  # notifications each user holds before the storm; the page shows the newest
NOTIFICATION_TYPES = {"deal-notification", "system-message", "job-complete"}
WRITER_BATCH = int(os.environ.get("BENCH_STORM_WRITER_BATCH", "100"))


class Storm:
    """Every page of the storm and the counts the measurement needs."""

    def __init__(self, expected: str) -> None:
        self.port = 0
        self.expected = expected  # the id published during the outage
        self.after_kill = False
        self.stopping = False
        self.greeted = 0
        self.back = 0  # pages greeted again after the SIGTERM
        self.done = 0  # back and holding the new notification
        self.duplicates = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.last_back_ns = 0
        self.last_done_ns = 0
        self.tasks: set[asyncio.Future[None]] = set()


class Page:
    """One browser tab's socket, reconnecting like the htmx ws extension."""

    def __init__(self, storm: Storm, token: str, newest: str) -> None:
        self.storm, self.token, self.newest = storm, token, newest
        self.retries = 0
        self.seen: dict[str, int] = {}
        self.sock: PageSocket | None = None
        self.back = self.done = False

    def connect(self) -> None:
        self.storm.attempts += 1
        task = asyncio.ensure_future(self._connect(self.storm.port))
        self.storm.tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self.storm.tasks.discard)

    async def _connect(self, port: int) -> None:
        path = f"/ws?format=json&token={self.token}&last_id={self.newest}"
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: PageSocket(self, upgrade_request(path)), "127.0.0.1", port
            )
        except OSError:
            self.closed(1006)

    def opened(self) -> None:
        self.retries = 0  # the ext's onopen

    def closed(self, code: int) -> None:
        self.sock = None
        if code == 1006:
            self.storm.failed_attempts += 1
        if self.storm.stopping or code not in RECONNECT_CODES:
            return
        delay = random.random() * 2 ** min(self.retries, 6)  # seconds; full jitter
        asyncio.get_running_loop().call_later(delay, self._retry)

    def _retry(self) -> None:
        if not self.storm.stopping:
            self.retries += 1
            self.connect()

    def message(self, text: bytes) -> None:
        msg = json.loads(text)
        kind, storm = msg.get("type"), self.storm
        if kind == "connection-established":
            storm.greeted += 1
            if storm.after_kill and not self.back:
                self.back = True
                storm.back += 1
                storm.last_back_ns = time.monotonic_ns()
        elif kind in NOTIFICATION_TYPES and "id" in msg["data"]:
            nid = msg["data"]["id"]
            n = self.seen[nid] = self.seen.get(nid, 0) + 1
            if n == 2:
                storm.duplicates += 1
            self.newest = max(self.newest, nid)
        if self.back and not self.done and storm.expected in self.seen:
            self.done = True
            storm.done += 1
            storm.last_done_ns = time.monotonic_ns()


class PageSocket(FrameReader):
    """The socket under a Page: upgrade, then text frames and the close frame."""

    def __init__(self, page: Page, request: bytes) -> None:
        super().__init__(request)
        self.page = page
        self.code = 1006  # no close frame: abnormal closure

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.page.sock = self
        super().connection_made(transport)

    def opened(self) -> None:
        self.page.opened()

    def refused(self) -> None:
        assert self.transport is not None
        self.transport.abort()  # the browser's onerror + onclose(1006)

    def frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == 1:
            self.page.message(buf[start:end])
        elif opcode == 8 and end - start >= 2:
            self.code = int.from_bytes(buf[start : start + 2], "big")

    def connection_lost(self, exc: Exception | None) -> None:
        self.page.closed(self.code)


def _seed(mongodb_uri: str, users: list[str]) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    db = client.get_default_database()
    for user in users:
        store_notifications(db, user, HISTORY, 1, "Before the storm")
    client.close()


async def _storm(
    start_server: Callable[..., Any],
    env: dict[str, str],
    tmp: Path,
    sockets: int,
    users: list[str],
    writer: subprocess.Popen[str],
    timeout: float,
    connect_budget: float,
    survivors: int,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    storm = Storm(format_id(HISTORY + 1))
    pages: list[Page] = []
    a, a_port = start_server("notifier", env, tmp)
    # The survivors: WEB_CONCURRENCY processes on one port, as a deploy's new dyno is.
    b, b_port = start_server("notifier", {**env, "WEB_CONCURRENCY": str(survivors)}, tmp)
    try:
        secret = env["JWT_SECRET"]
        known_users(env["REDIS_URL"], users)
        tokens = {u: issue_token(secret, u, "storm", "shopper", 7200) for u in users}
        pages = [
            Page(storm, tokens[users[i % len(users)]], format_id(HISTORY)) for i in range(sockets)
        ]
        storm.port = a_port
        started = time.monotonic()
        # Connect while the budget lasts: the second process takes them back at about the
        # rate the first took them, so this bounds the storm's own time as well.
        for i in range(0, sockets, 200):
            if time.monotonic() - started > connect_budget:
                pages = pages[:i]
                break
            chunk = pages[i : i + 200]
            for p in chunk:
                p.connect()
            want = i + len(chunk)
            if not await until(lambda want=want: storm.greeted >= want, 120, 0.005):  # type: ignore[misc]
                raise RuntimeError(f"storm: only {storm.greeted} of {want} connected")
        connect_s = time.monotonic() - started
        await asyncio.sleep(1.0)  # the server's per-socket connect work settles
        rss_a = a.rss_kib()
        storm.port, storm.after_kill = b_port, True
        killed_ns = time.monotonic_ns()
        a.popen.send_signal(signal.SIGTERM)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        asked, sockets = sockets, len(pages)
        finished = await until(lambda: storm.done >= sockets, timeout, 0.005)
        elapsed = (time.monotonic_ns() - killed_ns) / 1e9
        written = await loop.run_in_executor(None, writer.stdout.readline)
        await asyncio.sleep(0.5)  # a late repeat would show up here
        storm.stopping = True
        return {
            "sockets": sockets,
            "sockets_asked": asked,
            "connect_budget_s": connect_budget,
            "users": len(users),
            "survivor_processes": survivors,
            "published": len(users),
            "completed": finished,
            "seconds_to_all_back": (storm.last_back_ns - killed_ns) / 1e9 if storm.back else None,
            "seconds_to_caught_up": (storm.last_done_ns - killed_ns) / 1e9 if finished else None,
            "seconds_waited": elapsed,
            "back": storm.back,
            "caught_up": storm.done,
            "lost": sockets - storm.done,
            "duplicates": storm.duplicates,
            "reconnect_attempts": storm.attempts - sockets,
            "failed_attempts": storm.failed_attempts,
            "writer_seconds": float(written.split()[1]) if written.startswith("done") else None,
            "writer_batch": WRITER_BATCH,
            "initial_connect_per_s": sockets / connect_s,
            "server_rss_kib": rss_a,
        }
    finally:
        storm.stopping = True
        for p in pages:
            if p.sock is not None and p.sock.transport is not None:
                p.sock.transport.abort()
        a.stop()
        b.stop()


def run(
    start_server: Callable[..., Any],
    env: dict[str, str],
    tmp: Path,
    sockets: int,
    per_user: int = 10,
    timeout: float = 90,
    connect_budget: float = 40,
    survivors: int = 2,
) -> dict[str, Any]:
    """One storm of up to `sockets` pages (per_user to a user) against fresh web processes.

    As many pages as the first process takes in `connect_budget` seconds: the largest
    storm that fits the suite's time.
    """
    print(
        f"reconnect storm: {sockets} sockets, SIGTERM, back on {survivors} other processes",
        flush=True,
    )
    users = [str(ObjectId()) for _ in range(max(1, sockets // per_user))]
    _seed(env["MONGODB_URI"], users)
    ids = tmp / f"storm-users-{users[0]}.txt"
    ids.write_text("\n".join(users))
    writer = subprocess.Popen(
        [sys.executable, str(BENCH / "storm.py"), "write", str(ids)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        result = asyncio.run(
            _storm(
                start_server, env, tmp, sockets, users, writer, timeout, connect_budget, survivors
            )
        )
    finally:
        writer.kill()
        writer.wait()
    print(
        f"  {result['sockets']} of {sockets} sockets connected in {connect_budget:.0f} s; "
        f"all back in {result['seconds_to_all_back']} s, caught up in "
        f"{result['seconds_to_caught_up']} s, lost {result['lost']}, twice "
        f"{result['duplicates']}",
        flush=True,
    )
    return result


def write(users_file: str) -> None:
    """The writer process: on "go", one notification for each user, as the worker does."""
    import redis

    from notifier.kinds import NotificationType
    from notifier.notifications.batch import NewNotification
    from notifier.notifications.store import NotificationWriter
    from notifier.realtime.bus import Publisher
    from notifier.realtime.publishing import NotificationService

    users = Path(users_file).read_text().split()
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
    service = NotificationService(
        NotificationWriter(client.get_default_database()),
        Publisher(redis.Redis.from_url(os.environ["REDIS_URL"])),
    )
    sys.stdin.readline()
    started = time.monotonic()
    data = {"message": "During the storm", "severity": "info"}
    for i in range(0, len(users), WRITER_BATCH):
        batch = users[i : i + WRITER_BATCH]
        if WRITER_BATCH == 1:
            service.notify(batch[0], NotificationType.SYSTEM, data)
        else:
            service.notify_many([NewNotification(u, NotificationType.SYSTEM, data) for u in batch])
    print(f"done {time.monotonic() - started:.3f}", flush=True)
    client.close()


if __name__ == "__main__":
    write(sys.argv[2])
