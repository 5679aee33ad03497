"""A worker killed in the middle of sending an email: the retried task still sends one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from notifier.email import EmailService
from notifier.embedded import free_port
from notifier.notifications import NotificationWriter
from tests.conftest import ROOT, Mailbox


class StallingMailbox(Mailbox):
    """Holds the first message's DATA open forever (the sender dies there), then accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.Event().wait()  # never answers; the client is killed meanwhile
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def stalling_smtp() -> Iterator[tuple[StallingMailbox, int]]:
    from aiosmtpd.controller import Controller

    box, port = StallingMailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    with out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo",
             "--loglevel=INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_ready(control: Celery, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(60):  # each ping waits up to a second for the worker's answer
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        if control.control.ping(timeout=1.0):
            return
    raise RuntimeError("the worker did not answer pings")


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_send_is_retried_and_sends_once(
    env, config, db, sync_redis, redis_server, stalling_smtp, alice, tmp_path
):
    box, port = stalling_smtp
    broker = f"{redis_server.url}/7"  # its own queue: the session's worker never sees it
    worker_env = {**env, "REDIS_URL": broker, "SMTP_URL": f"smtp://127.0.0.1:{port}",
                  "BROKER_VISIBILITY_TIMEOUT": "2"}  # fmt: skip
    log = tmp_path / "worker.log"
    control = Celery(broker=broker, set_as_current=False)
    doc = NotificationWriter(db).create(alice.user_id, "deal-notification", {
        "deals": [], "user_id": alice.user_id, "message": "You have 1 new deal(s) on your watched items!"})  # fmt: skip
    email_id = EmailService(config, db, sync_redis).plan_for_deal(doc)
    assert email_id

    first = start_worker(worker_env, log)
    second = None
    try:
        wait_ready(control, first, log)
        control.send_task("tasks.email.send_email", args=[email_id])
        assert box.stalled.wait(30), "the worker never started sending"
        first.kill()  # SIGKILL in the middle of the SMTP transaction
        first.wait()
        assert db.emails.find_one({"_id": email_id})["status"] == "sending"

        second = start_worker(worker_env, log)  # the task comes back (acks_late)
        [msg] = box.wait_for(f"{alice.username}@example.test", 1, timeout=60)
        assert msg["Subject"] == "You have 1 new deal(s) on your watched items!"
        # A second email through the same single-task worker: when it arrives, the first
        # task has finished, so any repeat of the first would have been sent by now.
        later = NotificationWriter(db).create(alice.user_id, "deal-notification", {
            "deals": [], "user_id": alice.user_id, "message": "You have 2 new deal(s) on your watched items!"})  # fmt: skip
        later_id = EmailService(config, db, sync_redis).plan_for_deal(later)
        control.send_task("tasks.email.send_email", args=[later_id])
        got = box.wait_for(f"{alice.username}@example.test", 2, timeout=60)
        assert [m["Subject"] for m in got] == [
            "You have 1 new deal(s) on your watched items!",
            "You have 2 new deal(s) on your watched items!",
        ]
        assert db.emails.find_one({"_id": email_id})["status"] == "sent"
    finally:
        control.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
