"""Lean sockets: what an idle WebSocket keeps after its handshake, and no more.

An open socket used to hold about 20 KiB, most of it left over from the HTTP handshake
(the request with its headers and arguments, the response headers, `ui`) and two empty
deques in its IOStream. `release_handshake` drops the former once open() is done;
`lazy_stream_buffers` makes the deques appear only while a write is pending.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import socket
from typing import Any

import tornado
from tornado import iostream
from tornado.iostream import IOStream
from tornado.web import RequestHandler
from tornado.websocket import WebSocketProtocol13

from web.logs import redact

log = logging.getLogger(__name__)

# Tornado's handler state that nothing reads once the socket is open (checked against
# tornado/web.py and tornado/websocket.py 6.4-6.6): response headers and body buffer,
# template helpers, output transforms, route and open() arguments. Reads after release
# find RequestHandler's class defaults or fail loudly, never stale data.
HANDSHAKE_ONLY = (
    "_headers",
    "_write_buffer",
    "ui",
    "_transforms",
    "path_args",
    "path_kwargs",
    "open_args",
    "open_kwargs",
)


class Handshake:
    """What is still read of a socket's request after open(): by log_exception only."""

    __slots__ = ("method", "remote_ip", "uri")

    def __init__(self, method: str | None, uri: str, remote_ip: str | None) -> None:
        self.method, self.uri, self.remote_ip = method, uri, remote_ip

    def __repr__(self) -> str:
        return f"Handshake({self.method} {self.uri} from {self.remote_ip})"


def release_handshake(handler: RequestHandler) -> None:
    """Drop a WebSocket handler's handshake state; call at the end of open().

    The request (headers, query and body arguments, cookies, the HTTP/1 connection
    object) becomes a `Handshake` with what error logging reads, with the token
    redacted from the uri. The instance dict is rebuilt, because a dict never shrinks
    when keys are deleted (and Tornado's `_detach_stream` has already grown it).
    Anything the handler reads later must be copied to plain attributes before this.
    """
    request = handler.request
    lean = {k: v for k, v in vars(handler).items() if k not in HANDSHAKE_ONLY}
    lean["request"] = Handshake(request.method, redact(request.uri or ""), request.remote_ip)
    handler.__dict__ = lean  # a new, right-sized dict
    stream = getattr(getattr(handler, "ws_connection", None), "stream", None)
    if stream is not None:
        shrink_stream(stream)


# IOStream buffers ------------------------------------------------------------------------


class _NoBuffers(tuple):
    """A shared, empty stand-in for an IOStream deque, until something is written.

    Reading it acts like an empty deque (false, len 0, [0] raises IndexError); Tornado's
    clear() works; any other mutation is an AttributeError, so a Tornado that writes
    through a path this module does not know about fails loudly instead of losing data.
    """

    __slots__ = ()

    def clear(self) -> None:
        """Nothing to clear."""

    def popleft(self) -> Any:
        """Like an empty deque's."""
        raise IndexError("pop from an empty deque")


NO_BUFFERS = _NoBuffers()
# The Tornado versions whose internals this module (and web/frames.py) was read against.
VERIFIED = ((6, 4), (6, 7))


def verified_tornado() -> bool:
    """Whether the running Tornado is one the fast path was checked against."""
    return VERIFIED[0] <= tuple(tornado.version_info[:2]) < VERIFIED[1]


def lazy_stream_buffers() -> None:
    """Patch IOStream so its two deques exist only while a write is in flight.

    Each deque costs about 0.6 KiB even when empty, and an idle socket's are always
    empty. Idempotent. Raises RuntimeError, with the patch undone, if this Tornado is not
    one it was written for or a self-test on a socket pair finds a deque it does not
    manage (web/transport.py then serves sockets through Tornado's stock API).
    """
    if not verified_tornado():
        raise RuntimeError(f"web.lean was checked against tornado 6.4-6.6, not {tornado.version}")
    buffer_cls: Any = iostream._StreamBuffer
    base: Any = iostream.BaseIOStream
    if not getattr(base, "_lean", False):
        _patch(buffer_cls, base)
    try:
        _self_test()
    except Exception:
        undo_lazy_stream_buffers()
        raise


_ORIGINALS: dict[str, Any] = {}


def undo_lazy_stream_buffers() -> None:
    """Put IOStream back as Tornado made it (a self-test failed, or a test is done)."""
    if not _ORIGINALS:
        return
    buffer_cls: Any = iostream._StreamBuffer
    base: Any = iostream.BaseIOStream
    buffer_cls.__init__, buffer_cls.append = _ORIGINALS["buffer_init"], _ORIGINALS["append"]
    base.__init__, base.write = _ORIGINALS["stream_init"], _ORIGINALS["write"]
    base._lean = False
    _ORIGINALS.clear()


def _patch(buffer_cls: Any, base: Any) -> None:
    buffer_init, buffer_append = buffer_cls.__init__, buffer_cls.append
    stream_init, stream_write = base.__init__, base.write
    _ORIGINALS.update(
        buffer_init=buffer_init, append=buffer_append, stream_init=stream_init, write=stream_write
    )

    def init_buffer(self: Any) -> None:
        buffer_init(self)
        self._buffers = NO_BUFFERS

    def append(self: Any, data: Any) -> None:
        if self._buffers is NO_BUFFERS:
            self._buffers = collections.deque()
        buffer_append(self, data)

    def init_stream(self: Any, *args: Any, **kwargs: Any) -> None:
        stream_init(self, *args, **kwargs)
        self._write_futures = NO_BUFFERS

    def write(self: Any, data: Any) -> Any:
        if self._write_futures is NO_BUFFERS:
            self._write_futures = collections.deque()
        return stream_write(self, data)

    buffer_cls.__init__, buffer_cls.append = init_buffer, append
    base.__init__, base.write = init_stream, write
    base._lean = True


def shrink_stream(stream: IOStream) -> None:
    """Give back an idle stream's deques (the handshake's response wrote through them)."""
    lean = getattr(stream, "_lean", False)
    if lean and not stream._write_futures:
        stream._write_futures = NO_BUFFERS  # type: ignore[assignment]
    buffer = stream._write_buffer
    if lean and buffer is not None and not buffer._buffers:  # None: the stream closed
        buffer._buffers = NO_BUFFERS  # type: ignore[assignment]


def _self_test() -> None:
    """Write through a patched stream on a socket pair; raise if the patch does not hold."""
    here, there = socket.socketpair()
    stream = IOStream(here)
    try:
        stray = [
            name
            for obj in (stream, stream._write_buffer)
            for name, value in vars(obj).items()
            if isinstance(value, collections.deque)
        ]
        if stray or stream._write_futures is not NO_BUFFERS:
            raise RuntimeError(f"web.lean: IOStream deques it does not manage: {stray}")
        stream.write(b"x")
        if there.recv(1) != b"x":
            raise RuntimeError("web.lean: a patched IOStream did not write")
        shrink_stream(stream)
        if stream._write_futures is not NO_BUFFERS:
            raise RuntimeError("web.lean: an idle IOStream kept its deques")
    finally:
        stream.close()
        there.close()


# One coroutine per idle socket, not eight ---------------------------------------------------


class DetachedReceive(WebSocketProtocol13):
    """Tornado's protocol, reading the client's frames from a task of its own.

    Stock Tornado runs a socket's receive loop at the bottom of the request's call chain
    (`_execute` -> `get` -> `accept_connection` -> `_accept_connection` -> the loop), so
    every suspended frame of the handshake lives as long as the socket: about 4 KiB an
    idle socket, the request's headers included (a local of `get`). Here the loop is
    handed to a task of its own and the handshake's coroutines finish. A socket's class
    is switched to this one only on a Tornado whose protocol this was checked against
    (`detached_receive_works`); otherwise the stock protocol serves it, unchanged.
    """

    async def _receive_frame_loop(self) -> None:
        # No reference kept here (a new attribute would grow the protocol's dict by 1.5
        # KiB): the task waits on the stream's read, which holds it while the socket is open.
        receiving = asyncio.ensure_future(super()._receive_frame_loop())
        receiving.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a socket's receive loop failed", exc_info=task.exception())


@functools.cache
def detached_receive_works() -> bool:
    """Whether this Tornado is one DetachedReceive was checked against (else: stock)."""
    loop = getattr(WebSocketProtocol13, "_receive_frame_loop", None)
    if verified_tornado() and inspect.iscoroutinefunction(loop):
        return True
    log.warning(
        "tornado %s: sockets read from the handshake's coroutines (web/lean.py was checked "
        "against 6.4-6.6); each idle socket keeps about 4 KiB more",
        tornado.version,
    )
    return False


def detach_receive(protocol: object) -> None:
    """Make a new socket's protocol read from a task of its own, where that is verified."""
    if type(protocol) is WebSocketProtocol13 and detached_receive_works():
        protocol.__class__ = DetachedReceive
