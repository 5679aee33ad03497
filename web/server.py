"""The HTTP server in front of the Application: who the client is, body limits, slow clients.

- The client address and protocol come from X-Forwarded-For / -Proto only when the
  socket's peer is a trusted proxy (TRUSTED_PROXIES), as the right-most untrusted hop.
- A body over MAX_BODY gets a 413 JSON error, read and dropped (never buffered), up to
  DRAIN_LIMIT; beyond that the connection is closed, as Tornado does.
- A new connection must send its first request's headers within `header_timeout`; an
  idle keep-alive connection (and a later request's headers) gets `idle_timeout`; one
  client address may hold at most `connections_per_address` connections.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
import weakref
from collections import deque
from collections.abc import Awaitable
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from notifier.errors import TooLarge, error_body
from notifier.logs import redact
from notifier.proxies import TrustedProxies

log = logging.getLogger(__name__)
access_log = logging.getLogger("tornado.access")

MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 16 * MAX_BODY
BODY_TIMEOUT = 60.0
# Only our own files: no inline script or style (htmx's inline indicator style is turned
# off in base.html's htmx-config and lives in app.css), and the socket on our own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'{socket}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY.format(socket=""),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@functools.cache
def content_security_policy(base_url: str) -> str:
    """The policy, naming the socket's origin too: CSP3 lets 'self' cover ws: and wss:,
    but older Safari does not."""
    url = urllib.parse.urlsplit(base_url)
    scheme = "wss" if url.scheme == "https" else "ws"
    return CONTENT_SECURITY_POLICY.format(socket=f" {scheme}://{url.netloc}" if url.netloc else "")


class NotifierHTTPServer(HTTPServer):
    """Tornado's HTTPServer with trusted-proxy addresses, a 413 and a per-address cap."""

    def initialize(  # type: ignore[override]
        self,
        request_callback: Any,
        trusted_proxies: TrustedProxies,
        header_timeout: float,
        idle_timeout: float,
        connections_per_address: int,
        **kwargs: Any,
    ) -> None:
        """Build the server; the timeouts and limits go to every connection."""
        self.trusted_proxies = trusted_proxies
        self.header_timeout = header_timeout
        self.connections_per_address = connections_per_address
        # New connections that have not yet sent a request's headers. Their deadlines come
        # in arrival order (one timeout for all), so one sweep a tick closes the late ones
        # instead of a timer per connection (2% of a handshake's CPU in a burst).
        self._waiting: set[IOStream] = set()
        # Weak: a connection that sent its headers (or closed) is not kept for the sweep.
        self._deadlines: deque[tuple[float, weakref.ref[IOStream]]] = deque()
        self._sweep_tick = min(1.0, header_timeout / 4)
        self._sweeping = False
        self._streams = StreamsByAddress()
        super().initialize(
            request_callback,
            xheaders=False,  # forwarded headers are read below, from trusted proxies only
            max_body_size=DRAIN_LIMIT,
            idle_connection_timeout=idle_timeout,  # Tornado's per-request header timeout too
            body_timeout=BODY_TIMEOUT,
            **kwargs,
        )

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        """Refuse a connection over the per-address cap (a proxy's are not capped)."""
        peer = str(address[0]) if address else ""
        cap = self.connections_per_address
        if cap and not self.trusted_proxies.trusts_peer(peer):
            if not self._streams.admit(peer, stream, cap):
                log.warning("refused a connection from %s: %d open", peer, cap)
                stream.close()
                return
        loop = IOLoop.current()
        self._waiting.add(stream)
        self._deadlines.append((loop.time() + self.header_timeout, weakref.ref(stream)))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_tick, self._close_too_slow)
        super().handle_stream(stream, address)

    def request_started(self, stream: IOStream | None) -> None:
        """A connection's first request has all its headers: no more header deadline."""
        if stream is not None:
            self._waiting.discard(stream)

    def _close_too_slow(self) -> None:
        """Close the connections past their header deadline; again a tick later while any wait."""
        loop = IOLoop.current()
        now = loop.time()
        while self._deadlines and self._deadlines[0][0] <= now:
            stream = self._deadlines.popleft()[1]()
            if stream is not None and stream in self._waiting:
                self._waiting.discard(stream)
                if not stream.closed():
                    stream.close()  # a slow (or never finished) handshake
        self._sweeping = bool(self._deadlines)
        if self._sweeping:
            loop.call_later(self._sweep_tick, self._close_too_slow)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        """Every request passes through the adapter below."""
        delegate = super().start_request(server_conn, request_conn)
        return _ClientAdapter(self, delegate, request_conn)


class StreamsByAddress:
    """The open streams of each client address, for the per-address cap.

    A connect costs O(1): closed streams are pruned from an address's set only when the
    set has doubled since its last pruning (or reached the cap), and addresses with none
    open are forgotten when their number has doubled, so the work stays amortised
    constant whatever the number of open sockets (scanning every stream of the address
    on each connect cost 0.55 ms at 10,000).
    """

    MIN_PRUNE = 64

    def __init__(self) -> None:
        self._by_address: dict[str, tuple[set[IOStream], list[int]]] = {}
        self._forget_at = 1024

    def admit(self, peer: str, stream: IOStream, cap: int) -> bool:
        """Count `stream` against `peer`; False when the address already has `cap` open."""
        entry = self._by_address.get(peer)
        if entry is None:
            if len(self._by_address) >= self._forget_at:
                self._forget_closed()
            entry = self._by_address[peer] = (set(), [self.MIN_PRUNE])
        streams, prune_at = entry
        if len(streams) >= prune_at[0] or len(streams) >= cap:
            streams.difference_update([s for s in streams if s.closed()])
            prune_at[0] = max(2 * len(streams), self.MIN_PRUNE)
        if len(streams) >= cap:
            return False
        streams.add(stream)
        return True

    def _forget_closed(self) -> None:
        for peer, (streams, _) in list(self._by_address.items()):
            if all(s.closed() for s in streams):
                del self._by_address[peer]
        self._forget_at = max(2 * len(self._by_address), 1024)


class _ClientAdapter(httputil.HTTPMessageDelegate):
    """Sets the client's address and protocol, and answers 413 to an oversized body."""

    def __init__(
        self,
        server: NotifierHTTPServer,
        delegate: httputil.HTTPMessageDelegate,
        conn: httputil.HTTPConnection,
    ) -> None:
        self.server, self.delegate, self.conn = server, delegate, conn
        self.trusted = server.trusted_proxies
        self.received = 0
        self.too_large = False
        self.forwarded = False
        self.start_line: httputil.RequestStartLine | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.server.request_started(getattr(self.conn, "stream", None))
        context: Any = getattr(self.conn, "context", None)
        if context is not None:
            # The socket's own address and protocol, kept from the first request on it.
            if not hasattr(context, "peer"):
                context.peer, context.peer_protocol = context.remote_ip, context.protocol
            peer = context.peer
            context.remote_ip = self.trusted.client(peer, headers.get("X-Forwarded-For"))
            context.protocol = self.trusted.protocol(
                peer, headers.get("X-Forwarded-Proto"), context.peer_protocol
            )
        if isinstance(start_line, httputil.RequestStartLine):
            self.start_line = start_line
        length = headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
            self.too_large = True  # the handler never sees it; the body is read and dropped
            return None
        self.forwarded = True
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self.received += len(chunk)
        if self.too_large:
            return None
        if self.received > MAX_BODY:  # a chunked body that grew too large
            self.too_large = True
            self.delegate.on_connection_close()
            return None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.too_large:
            self.delegate.finish()
            return
        too_large = TooLarge("the body must be at most 1 MB")
        body = error_body(too_large).encode()
        headers = httputil.HTTPHeaders(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "Connection": "close",
                **SECURITY_HEADERS,
            }
        )
        self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", too_large.status, "Content Too Large"),
            headers,
            body,
        )
        self.conn.finish()
        context: Any = getattr(self.conn, "context", None)
        access_log.warning(
            "413 %s (%s) %d bytes refused",
            redact(self.start_line.path if self.start_line else "?"),
            getattr(context, "remote_ip", "?"),
            self.received,
        )

    def on_connection_close(self) -> None:
        if self.forwarded and not self.too_large:
            self.delegate.on_connection_close()
