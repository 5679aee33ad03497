"""The load generator: raw asyncio protocols for WebSocket clients and a Redis publisher.

No WebSocket library: each client is an asyncio.Protocol that sends the upgrade request,
then splits the server's (unmasked) frames and hands each payload to the Hub, which
counts them and, for targeted runs, reads the scheduled send time the payload carries
(`@@<monotonic ns>@@`). The publisher writes RESP PUBLISH commands and ignores replies:
announcements on the shared channel, a user's events on the user's own channel (as
notifier's workers publish them).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any

CHANNEL = b"notifier:events"
ZERO_MASK = b"\0\0\0\0"


async def until(done: Callable[[], bool], timeout: float, every: float = 0.002) -> bool:
    """Poll `done()` every `every` seconds; False if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


class Hub:
    """What every client of the load generator received."""

    def __init__(self) -> None:
        self.greeted = 0
        self.received = 0
        self.last_ns = 0
        self.track = False  # read scheduled send times (targeted runs)
        self.latencies_ns: list[int] = []
        self.last_size = 0
        self.failed = 0

    def message(self, client: WsClient, buf: bytes, start: int, end: int) -> None:
        now = time.monotonic_ns()
        if not client.greeted:
            client.greeted = True
            self.greeted += 1
            return
        self.received += 1
        self.last_ns = now
        self.last_size = end - start
        if self.track:
            i = buf.find(b"@@", start, end)
            if i >= 0:
                j = buf.find(b"@@", i + 2, end)
                self.latencies_ns.append(now - int(buf[i + 2 : j]))

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll until `done()` (receipt times are stamped on arrival, not here)."""
        return await until(done, timeout)


class FrameReader(asyncio.Protocol):
    """A client socket: sends its upgrade request, then splits the server's (unmasked)
    frames and hands each to `frame`; `opened` and `refused` say how the upgrade went."""

    __slots__ = ("buf", "request", "transport", "upgraded")

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)  # type: ignore[attr-defined]

    def opened(self) -> None:
        """The server answered 101."""

    def refused(self) -> None:
        """The server answered anything but 101."""

    def frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        """One whole frame: its payload is buf[start:end]."""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            head = buf.find(b"\r\n\r\n")
            if head < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.refused()
                return
            self.upgraded = True
            self.opened()
            buf = buf[head + 4 :]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            size = buf[pos + 1] & 0x7F
            if size < 126:
                start = pos + 2
            elif size == 126:
                if n - pos < 4:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            else:
                if n - pos < 10:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            end = start + size
            if end > n:
                break
            self.frame(buf[pos] & 0x0F, buf, start, end)
            pos = end
        self.buf = buf[pos:] if pos < n else b""


class WsClient(FrameReader):
    """One WebSocket client that only reads."""

    __slots__ = ("greeted", "hub")

    def __init__(self, hub: Hub, request: bytes) -> None:
        super().__init__(request)
        self.hub = hub
        self.greeted = False

    def refused(self) -> None:
        self.hub.failed += 1
        assert self.transport is not None
        self.transport.close()

    def frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode in (1, 2):
            self.hub.message(self, buf, start, end)
        elif opcode == 9 and self.transport is not None:  # a ping: pong, as a browser does
            # A client's frame is masked; the zero key leaves the payload as it is.
            self.transport.write(bytes((0x8A, 0x80 | (end - start))) + ZERO_MASK + buf[start:end])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def upgrade_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def connect(
    hub: Hub,
    port: int,
    paths: list[str],
    batch: int = 100,
    source: str | None = None,
    strict: bool = True,
) -> list[WsClient]:
    """Open one socket per path, `batch` at a time, each greeted before the next batch
    (from the `source` address, e.g. 127.0.0.5, when given). Not `strict`: a batch not
    all greeted within a minute is left as it is (hub.greeted says how many were)."""
    local = (source, 0) if source else None
    loop = asyncio.get_running_loop()
    clients: list[WsClient] = []
    for i in range(0, len(paths), batch):
        chunk = paths[i : i + batch]
        want = hub.greeted + len(chunk)
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda p=p: WsClient(hub, upgrade_request(p)),
                    "127.0.0.1",
                    port,
                    local_addr=local,
                )
                for p in chunk
            )
        )
        clients += [proto for _, proto in made]
        greeted = await hub.wait(lambda want=want: hub.greeted >= want, 60)  # type: ignore[misc]
        if not greeted and strict:
            raise RuntimeError(f"only {hub.greeted} of {want} sockets were greeted")
    return clients


class Publisher(asyncio.Protocol):
    """PUBLISH on the notifier channel over a raw Redis connection, pipelined."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        pass  # the replies (subscriber counts) are not needed

    def publish(self, events: list[bytes]) -> None:
        """Events on the shared channel (announcements)."""
        self.transport.write(
            b"".join(
                b"*3\r\n$7\r\nPUBLISH\r\n$15\r\n%s\r\n$%d\r\n%s\r\n" % (CHANNEL, len(e), e)
                for e in events
            )
        )

    def publish_to(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """(channel, event) pairs: each user's events on the user's channel, pipelined."""
        self.transport.write(
            b"".join(
                b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(c), c, len(e), e)
                for c, e in pairs
            )
        )


async def send_at(
    pub: Publisher,
    template: str,
    users: list[str],
    chans: list[bytes],
    seqs: list[int],
    rate: int,
    total: int,
) -> int:
    """`total` targeted events at `rate`/s (open loop), users in turn, each on its user's
    channel; `template` gets the user (u), its next seq (s) and the scheduled send time
    (t, monotonic ns). Returns the schedule's start (monotonic ns)."""
    start = time.monotonic_ns() + 2_000_000
    sent = 0
    while sent < total:
        due = min(total, max(0, (time.monotonic_ns() - start) * rate // 1_000_000_000 + 1))
        if due > sent:
            batch = []
            for k in range(sent, due):
                u = k % len(users)
                seqs[u] += 1
                event = template % {"u": users[u], "s": seqs[u], "t": start + k * 10**9 // rate}
                batch.append((chans[u], event.encode()))
            pub.publish_to(batch)
            sent = due
        await asyncio.sleep(0.001)
    return start


def channels(users: list[str]) -> list[bytes]:
    """Each user's channel, as notifier's workers name it."""
    from notifier.realtime.bus import user_channel

    return [user_channel(u).encode() for u in users]


async def publisher(port: int) -> Publisher:
    _, proto = await asyncio.get_running_loop().create_connection(Publisher, "127.0.0.1", port)
    return proto


async def timed_get(port: int, path: str, token: str) -> tuple[float, bytes]:
    """GET `path` as the token's user; (milliseconds, body)."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    request = HTTPRequest(
        f"http://127.0.0.1:{port}{path}",
        request_timeout=300,
        headers={"Authorization": f"Bearer {token}"},
    )
    started = time.perf_counter()
    response = await AsyncHTTPClient().fetch(request)
    return (time.perf_counter() - started) * 1000, response.body


def wait_listening(web: Any, log: Any, count: int, timeout: float) -> None:
    """Until `log` says "listening on port" `count` times; SystemExit if `web` exits first."""
    deadline = time.monotonic() + timeout
    while log.read_bytes().count(b"listening on port") < count:
        if web.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the web process did not start; see {log}")
        time.sleep(0.05)
