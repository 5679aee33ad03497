"""A push service stand-in and a browser's side of Web Push, for the tests.

`PushServiceStandIn` is a small Tornado app on loopback, on a thread of its own: it
records every POST (headers, body, when) and answers 201, or what a test scripted for
that endpoint (410, 503 then 201, a redirect, no answer at all). `Subscriber` is what a
browser holds: a P-256 key pair and an auth secret; `open_push` decrypts a recorded
push with them (http_ece, aes128gcm) and checks its VAPID signature against the
server's public key, as a push service and a browser would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tornado.httpserver import HTTPServer

from notifier.dev.embedded import free_port


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    """One POST the stand-in received."""

    name: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival


@dataclass
class Subscriber:
    """A browser's half of a subscription: its keys, and the endpoint it was given."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def json(self) -> dict[str, Any]:
        """PushSubscription.toJSON(), as the page posts it."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


class _Endpoint(tornado.web.RequestHandler):
    def initialize(self, standin: PushServiceStandIn) -> None:
        self.standin = standin

    async def post(self, name: str) -> None:
        standin = self.standin
        standin.record(Received(name, dict(self.request.headers), self.request.body, time.time()))
        if name.startswith("hang"):
            await standin.released  # answers nothing until the stand-in stops
            return
        status = standin.next_status(name)
        if 300 <= status < 400:
            self.set_header("Location", standin.url("followed"))
        self.set_status(status)
        self.finish()


class PushServiceStandIn:
    """A push service on 127.0.0.1 (Tornado on its own thread and loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.changed = threading.Condition()
        self._scripts: dict[str, list[int]] = {}
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.released: asyncio.Future[None]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    def script(self, name: str, *statuses: int) -> None:
        """Answer the next POSTs to `name` with these statuses, in turn (then 201)."""
        self._scripts[name] = list(statuses)

    def next_status(self, name: str) -> int:
        queued = self._scripts.get(name) or []
        if queued:
            return queued.pop(0)
        return 410 if name.startswith("gone") else 201

    def record(self, received: Received) -> None:
        with self.changed:
            self.received.append(received)
            self.changed.notify_all()

    def to(self, name: str) -> list[Received]:
        with self.changed:
            return [r for r in self.received if r.name == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 30) -> list[Received]:
        """Block until `name` got at least `count` POSTs (run it in an executor from async)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.to(name)) >= count, timeout)
        assert ok, f"{name} got {len(self.to(name))} of {count} push(es)"
        return self.to(name)

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "the push service stand-in did not start"

    def stop(self) -> None:
        async def finish() -> None:
            self._server.stop()
            if not self.released.done():
                self.released.set_result(None)  # hung handlers end
            await self._server.close_all_connections()

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.released = self._loop.create_future()
        app = tornado.web.Application([(r"/push/([^/]+)", _Endpoint, {"standin": self})])
        self._server = HTTPServer(app)
        self._server.listen(self.port, "127.0.0.1")
        self._started.set()
        self._loop.run_forever()


def vapid_claims(received: Received, public_key: str) -> dict[str, Any]:
    """Check the push's `Authorization: vapid t=<JWT>, k=<key>` against the server's
    public key; returns the JWT's claims (audience: the endpoint's origin)."""
    scheme, _, params = received.headers["Authorization"].partition(" ")
    assert scheme.lower() == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    assert parts["k"] == public_key, "signed with another key"
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
    origin = f"http://{received.headers['Host']}"  # the push service's, which it checks
    claims = jwt.decode(parts["t"], key=key, algorithms=["ES256"], audience=origin)
    assert time.time() < claims["exp"] <= time.time() + 86400
    return claims


def open_push(received: Received, subscriber: Subscriber) -> dict[str, Any]:
    """Decrypt a push as the browser would (aes128gcm with its key and auth secret)."""
    assert received.headers["Content-Encoding"] == "aes128gcm"
    plain = http_ece.decrypt(
        received.body,
        private_key=subscriber.private_key,
        auth_secret=subscriber.auth,
        version="aes128gcm",
    )
    return json.loads(plain)
