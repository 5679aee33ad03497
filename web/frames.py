"""WebSocket text frames built once per message and written straight to each socket.

Tornado's `write_message` encodes and frames per call and wraps every write in a task;
a fan-out to thousands of sockets paid that for each of them. Here a message is framed
once (RFC 6455: server frames are unmasked; no compression is negotiated) and the same
bytes go to every socket, handed to the kernel directly while its buffer has room.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any

import tornado
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

FIN_TEXT = 0x81
PING = bytes((0x89, 0))  # a final ping frame with no payload (web/pings.py sends it)


@functools.lru_cache(maxsize=64)
def text_frame(payload: str) -> bytes:
    """`payload` as one final, unmasked text frame.

    Cached by payload: the registry renders a fan-out once per format and offers the same
    string to every socket, so only the first socket of each format encodes and frames it.
    """
    data = payload.encode()
    n = len(data)
    if n < 126:
        header = bytes((FIN_TEXT, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", FIN_TEXT, 126, n)
    else:
        header = struct.pack("!BBQ", FIN_TEXT, 127, n)
    return header + data


def write_frame(stream: IOStream, frame: bytes) -> Any:
    """Write `frame` to the stream: None when the kernel took all of it, else a Future.

    Only when the stream has nothing buffered does the frame go to the socket directly
    (so bytes never overtake Tornado's own writes, such as pings); what the kernel does
    not take is buffered by the stream, whose Future tells when it is flushed. Raises
    StreamClosedError when the socket is gone (the stream is closed, so the handler's
    on_close follows).
    """
    if not stream.writing() and not isinstance(stream, SSLIOStream) and not stream.closed():
        try:
            sent = stream.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            stream.close(exc_info=(type(e), e, e.__traceback__))
            raise StreamClosedError(real_error=e) from e
        if sent == len(frame):
            return None
        frame = frame[sent:]
    return stream.write(frame)


def stream_problems(stream: object) -> list[str]:
    """What the fast path needs and `stream` lacks: a `.socket` and a `.writing()`."""
    problems = []
    if not isinstance(getattr(stream, "socket", None), socket.socket):
        problems.append("no `.socket`")
    writing = getattr(stream, "writing", None)
    if not callable(writing) or writing() is not False:
        problems.append("no `.writing()`")
    return problems


def iostream_problems() -> list[str]:
    """What write_frame needs and this Tornado's IOStream lacks (a self-test at start).

    Needs a running IOLoop (an IOStream belongs to one).
    """
    ours, theirs = socket.socketpair()
    stream = IOStream(ours)
    try:
        return [f"tornado {tornado.version}: IOStream has {p}" for p in stream_problems(stream)]
    finally:
        stream.close()
        theirs.close()
