"""Redis spoken directly on the hot paths: RESP over asyncio, parsed by hiredis.

redis-py takes a connection from a pool for each command (a condition, a timeout, a
retry wrapper, a parser per connection): on a WebSocket handshake that cost more than
the command itself, and a pool under a burst of handshakes spent its time waking
waiters. Two things here instead, each a few dozen lines:

- `Node`: where a Redis server is and how to log in (from a redis:// URL, as redis-py
  reads it), with `connect()` for the bus subscriber's connections;
- `RedisLink`: one pipelined connection that many coroutines share. Each call writes its
  command at once and awaits its reply; Redis answers a connection's commands in order,
  so replies are matched first in, first out, and the commands of concurrent
  handshakes travel together.

Errors are redis-py's exception classes, so callers handle both clients alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 5.0


def command(*args: str | bytes | int | float) -> bytes:
    """One command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


@dataclass(frozen=True)
class Node:
    """A Redis server, and how to reach it."""

    host: str
    port: int
    options: tuple[tuple[str, Any], ...] = ()  # parse_url's: password, ssl, unix path...

    @classmethod
    def from_url(cls, url: str, host: str | None = None, port: int | None = None) -> Node:
        """The server a redis:// (rediss://, unix://) URL names; host and port may be
        given instead (a cluster's node, with the URL's credentials)."""
        options = parse_url(url)
        extra = tuple(sorted((k, v) for k, v in options.items() if k not in ("host", "port")))
        return cls(
            host or options.get("host", "localhost"), port or options.get("port", 6379), extra
        )

    @property
    def db(self) -> int:
        """The database the URL names (0 by default)."""
        return int(dict(self.options).get("db", 0) or 0)

    def login(self) -> list[bytes]:
        """The AUTH command, when the URL has a password."""
        opts = dict(self.options)
        if not opts.get("password"):
            return []
        user = [opts["username"]] if opts.get("username") else []
        return [command("AUTH", *user, opts["password"])]

    async def open(self, limit: int = READ_SIZE) -> tuple[asyncio.StreamReader, Any]:
        """A new connection as asyncio streams (not yet logged in)."""
        opts = dict(self.options)
        if opts.get("path"):
            opened = asyncio.open_unix_connection(opts["path"], limit=limit)
        else:
            opened = asyncio.open_connection(self.host, self.port, ssl=_tls(opts), limit=limit)
        return await asyncio.wait_for(opened, CONNECT_TIMEOUT)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An open connection, logged in (AUTH), in RESP2: ready to subscribe."""
        reader, writer = await self.open()
        for login in self.login():
            writer.write(login)
            replies = hiredis.Reader()
            while (reply := replies.gets()) is False:
                data = await asyncio.wait_for(reader.read(READ_SIZE), CONNECT_TIMEOUT)
                if not data:
                    raise RedisConnectionError("Redis closed the connection during AUTH")
                replies.feed(data)
            if isinstance(reply, hiredis.ReplyError):
                writer.close()
                raise RedisConnectionError(f"Redis refused AUTH: {reply}")
        return reader, writer


def _tls(opts: dict[str, Any]) -> ssl.SSLContext | None:
    if not opts.get("connection_class") or "SSL" not in opts["connection_class"].__name__:
        return None
    context = ssl.create_default_context()
    if opts.get("ssl_cert_reqs") in ("none", "CERT_NONE"):  # e.g. Heroku's self-signed Redis
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Script:
    """A Lua script, run by its SHA (EVALSHA), loaded on first use (NOSCRIPT)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id


class RedisLink:
    """One Redis connection shared by every coroutine of this process (event loop only).

    Connects on first use and again after a failure. The commands of one turn of the loop
    go out in one write (a burst of handshakes paid a send() each). A command unanswered
    for `timeout` seconds (a half-open connection, a stalled server) fails every pending
    one with redis.TimeoutError and drops the connection; one clock check per second,
    not a timer per call.
    """

    def __init__(self, node: Node, timeout: float = 3.0) -> None:
        self._node = node
        self._timeout = timeout
        self._writer: Any = None
        self._pending: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._outgoing: list[bytes] = []  # the tail of _pending's commands, not yet written
        self._connecting: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float = 3.0) -> RedisLink:
        """A link to the server a redis:// URL names."""
        return cls(Node.from_url(url), timeout)

    async def call(self, *args: str | bytes | int | float) -> Any:
        """Run one command; its reply (ResponseError for an error reply)."""
        if self._writer is None:
            await self._connect()
        return await self._send(command(*args))

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script with these keys and arguments (loading it the first time)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", script.source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the connection (pending calls fail) and stop reading it."""
        self._drop(RedisConnectionError("the link was closed"))
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _connect(self) -> None:
        if self._connecting is not None:  # another call is connecting: wait for it
            await asyncio.shield(self._connecting)
            if self._writer is None:
                raise RedisConnectionError("could not connect to Redis")
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            reader, writer = await self._node.open()
            self._writer = writer
            self._reading = loop.create_task(self._read(reader, writer))
            setup = [*self._node.login()]
            if self._node.db:
                setup.append(command("SELECT", self._node.db))
            # Queued at once, so a call made while they are answered (the link is open)
            # goes out after SELECT, not into database 0 between AUTH and SELECT.
            await asyncio.gather(*[self._send(cmd) for cmd in setup])
        except (OSError, TimeoutError) as e:
            self._drop(RedisConnectionError(f"could not connect to Redis: {e}"))
            raise RedisConnectionError(f"could not connect to Redis: {e}") from e
        except ResponseError as e:
            self._drop(RedisConnectionError(str(e)))
            raise
        finally:
            self._connecting.set_result(None)
            self._connecting = None

    def _send(self, data: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((loop.time(), future))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(data)
        if self._watchdog is None:
            self._watchdog = loop.call_later(1.0, self._check)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and self._writer is not None:
            self._writer.write(b"".join(outgoing))

    def _check(self) -> None:
        """Once a second while calls are pending: fail them all if the oldest is too old."""
        self._watchdog = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._pending[0][0] > self._timeout:
            self._drop(RedisTimeoutError(f"no answer from Redis within {self._timeout:.0f}s"))
            return
        self._watchdog = loop.call_later(1.0, self._check)

    async def _read(self, reader: asyncio.StreamReader, writer: Any) -> None:
        replies = hiredis.Reader(replyError=ResponseError)
        pending = self._pending
        try:
            while data := await reader.read(READ_SIZE):
                replies.feed(data)
                while (reply := replies.gets()) is not False:
                    if not pending:
                        raise RedisConnectionError("a reply nobody asked for")
                    _, future = pending.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
            error = RedisConnectionError("Redis closed the connection")
        except (OSError, hiredis.ProtocolError, RedisConnectionError) as e:
            error = e if isinstance(e, RedisConnectionError) else RedisConnectionError(str(e))
        if self._writer is writer:
            self._drop(error)

    def _drop(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closing
                writer.close()
        pending, self._pending = self._pending, deque()
        self._outgoing = []  # their commands: never to go out on a later connection
        for _, future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a caller may have stopped waiting
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
