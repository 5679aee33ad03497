"""A web process's side of the bus: the broadcast channel, and a channel per user it holds.

As Centrifugo does it: a process subscribes to a user's channel when the user's first
socket arrives there and unsubscribes LINGER seconds after the last one leaves (a tab
that is only reloading keeps it). Commands are batched: whatever handshakes ask for in
one turn of the loop goes out as one SUBSCRIBE of up to BATCH channels. A handshake
waits for its channel's confirmation before it reads the user's state (subscribe, then
read: nothing published in between is missed; a gap is filled from MongoDB anyway).

It speaks RESP itself and parses with hiredis: redis-py's PubSub adds a timeout, a health
check, a retry wrapper and a dict per message, which cost more than delivering the
message, and reading its connection directly meant using a private API. Once logged in, a
connection's bytes are parsed in the transport's own callback (a Protocol), not by a task
woken for each read: with several processes each read carries few events, and the
wake-up was a good part of its cost.
On a Redis Cluster the channels are sharded (SSUBSCRIBE), with one connection per shard
that owns any of them; a command names channels of one hash-tag group (one slot) only.

Losing any connection (Redis restarted, the link killed, or silent: a PING every
`ping_every` seconds, given up after `dead_after` without an answer) loses the bus: the
subscriber reconnects with backoff, subscribes again to everything the process holds,
in batches, and then calls `on_joined`, which fills every socket's gap from MongoDB.

Like the registry, a Subscriber is created and used only on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import hiredis
import msgspec
from redis import RedisError
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from notifier import metrics
from notifier.realtime.bus import BROADCAST, USER_GROUPS, user_channel
from notifier.realtime.events import Event, decode
from notifier.realtime.resp import Node, command

log = logging.getLogger(__name__)

LINGER = 1.0  # seconds a user's channel is kept after their last socket here closed
BATCH = 1000  # channels per SUBSCRIBE / UNSUBSCRIBE command
HOLD_WAIT = 5.0  # the longest a handshake waits for its channel's confirmation


@dataclass
class Subscription:
    """How a web process's subscription to the bus is doing (for /readyz).

    Written by the Subscriber and read by handlers, all on the same event loop.
    """

    subscribed: bool = False
    heard_at: float = 0.0  # loop time of the last word from Redis on the subscription
    times_subscribed: int = 0

    def live(self, now: float, dead_after: float = 15.0) -> bool:
        """Subscribed, and Redis answered on the subscription within `dead_after` seconds."""
        return self.subscribed and now - self.heard_at <= dead_after


class BusLost(Exception):
    """A subscription connection failed, closed or went silent."""


class Topology:
    """Which node each channel lives on: one Redis, or the shards of a Redis Cluster."""

    def __init__(self, redis_url: str, cluster_url: str | None = None) -> None:
        self.sharded = cluster_url is not None
        self._url = cluster_url or redis_url
        self._group_nodes: list[Node] = []
        self._single: Node | None = None

    async def learn(self) -> None:
        """Find the nodes (asks a cluster for its slots; raises OSError when unreachable)."""
        if not self.sharded:
            self._single = Node.from_url(self._url)
            return
        cluster = AsyncRedisCluster.from_url(self._url)
        try:
            await cluster.initialize()

            def owner(key: str) -> Node:
                node = cluster.get_node_from_key(key)
                if node is None:
                    raise BusLost(f"the cluster has no node for {key}")
                return Node.from_url(self._url, node.host, int(node.port))

            self._group_nodes = [owner(f"{{g{group}}}") for group in range(USER_GROUPS)]
            self._broadcast = owner(BROADCAST)
        finally:
            await cluster.aclose()

    def nodes(self) -> set[Node]:
        """Every node a channel may live on."""
        if self._single is not None:
            return {self._single}
        return {*self._group_nodes, self._broadcast}

    def node_of(self, channel: str) -> Node:
        """The node a channel's subscription goes to."""
        if self._single is not None:
            return self._single
        if channel == BROADCAST:
            return self._broadcast
        return self._group_nodes[_group_of(channel)]

    def batches(self, channels: Iterable[str]) -> Iterable[tuple[Node, list[str]]]:
        """Channels by node and, on a cluster, by slot group, BATCH at most per command."""
        by_key: dict[tuple[Node, int], list[str]] = defaultdict(list)
        for channel in channels:
            group = _group_of(channel) if self.sharded else 0
            by_key[(self.node_of(channel), group)].append(channel)
        for (node, _), some in by_key.items():
            for i in range(0, len(some), BATCH):
                yield node, some[i : i + BATCH]


def _group_of(channel: str) -> int:
    """The group in a user channel's hash tag (-1 for the broadcast channel)."""
    start = channel.find("{g")
    if start < 0:
        return -1
    return int(channel[start + 2 : channel.index("}", start)])


class _Link(asyncio.Protocol):
    """One subscription connection (to one node): what it reads goes to `received` as it
    arrives; its end goes to `lost`."""

    def __init__(
        self,
        node: Node,
        writer: asyncio.StreamWriter,
        received: Callable[[_Link, bytes], None],
        lost: Callable[[_Link, BusLost], None],
    ) -> None:
        self.node, self.writer = node, writer
        self.replies = hiredis.Reader()
        self.unanswered = 0  # PINGs sent since Redis last said anything
        self._received, self._lost = received, lost
        # Logged in and nothing else asked yet, so the stream holds nothing unread.
        writer.transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        self._received(self, data)

    def eof_received(self) -> bool:
        self._lost(self, BusLost("Redis closed the subscription"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self, BusLost(f"the subscription's connection was lost: {exc or 'closed'}"))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


class Subscriber:
    """Holds this process's subscriptions and feeds each event to `handle`.

    `hold(user)` when a user's socket opens (returns once the user's channel is
    subscribed), `release(user)` when it closes; `run()` until cancelled. `on_joined`
    runs after each (re)joining of the bus, once every channel held is subscribed again;
    `after_batch` after the events of each read from a connection, so per-message
    bookkeeping is done once per batch.
    """

    def __init__(
        self,
        topology: Topology,
        handle: Callable[[Event], None],
        on_joined: Callable[[], Awaitable[None]] | None = None,
        state: Subscription | None = None,
        after_batch: Callable[[], None] | None = None,
        ping_every: float = 5.0,
        dead_after: float = 15.0,
        max_backoff: float = 5.0,
        linger: float = LINGER,
    ) -> None:
        self.topology = topology
        self._handle = handle
        self._on_joined = on_joined
        self.state = state if state is not None else Subscription()
        self._after_batch = after_batch
        self._ping_every, self._dead_after, self._max_backoff = ping_every, dead_after, max_backoff
        self._linger = linger
        self._verb = b"ssubscribe" if topology.sharded else b"subscribe"
        self._message = b"smessage" if topology.sharded else b"message"
        self._holders: dict[str, int] = {}  # channel -> sockets here that need it
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._confirmed: set[str] = set()  # subscribed on the current connections
        self._in_flight: set[str] = set()  # SUBSCRIBE sent, confirmation not yet read
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._flush_due = False
        self._links: dict[Node, _Link] = {}
        self._connected = False
        self._lost: asyncio.Future[None] | None = None
        self._joining: set[str] = set()  # channels a (re)join still waits to be confirmed
        self._joined: asyncio.Future[None] | None = None
        self._on_bus = asyncio.Event()  # set once joined (on_joined done), cleared when lost

    # What sockets call -----------------------------------------------------------------------

    async def hold(self, user_id: str) -> None:
        """Keep the user's channel subscribed; returns once it is (or the bus is down).

        While the bus is down it returns at once: the rejoin subscribes the channel and
        fills every socket's gap from MongoDB.
        """
        channel = user_channel(user_id)
        self._holders[channel] = self._holders.get(channel, 0) + 1
        timer = self._lingering.pop(channel, None)
        if timer is not None:
            timer.cancel()
        self._to_unsubscribe.discard(channel)
        if channel in self._confirmed or not self._connected:
            return
        if channel not in self._in_flight:
            self._to_subscribe.add(channel)
            self._schedule_flush()
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(channel, []).append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), HOLD_WAIT)
        except TimeoutError:
            log.warning("no confirmation of a user's channel within %.0fs", HOLD_WAIT)

    def release(self, user_id: str) -> None:
        """One socket of the user closed here; after the last, leave its channel shortly."""
        channel = user_channel(user_id)
        left = self._holders.get(channel, 0) - 1
        if left > 0:
            self._holders[channel] = left
            return
        self._holders.pop(channel, None)
        if channel not in self._lingering:
            self._lingering[channel] = asyncio.get_running_loop().call_later(
                self._linger, self._leave, channel
            )

    def holds(self, user_id: str) -> bool:
        """Whether the user's channel is wanted here (a socket holds it, or it lingers)."""
        channel = user_channel(user_id)
        return channel in self._holders or channel in self._lingering

    @property
    def channels(self) -> int:
        """How many user channels this process is subscribed to (or about to be)."""
        return len(self._holders) + len(self._lingering)

    def _leave(self, channel: str) -> None:
        self._lingering.pop(channel, None)
        if channel in self._holders:
            return
        if channel in self._in_flight:  # unsubscribe only what is confirmed: try again later
            self._lingering[channel] = asyncio.get_running_loop().call_later(
                self._linger, self._leave, channel
            )
            return
        if channel in self._confirmed:
            self._to_unsubscribe.add(channel)
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send what this turn of the loop asked for, batched (never while the bus is down)."""
        self._flush_due = False
        subscribe = [c for c in self._to_subscribe if c in self._holders]
        unsubscribe = [c for c in self._to_unsubscribe if c not in self._holders]
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()
        if not self._connected:
            return  # the rejoin subscribes whatever is held by then
        self._in_flight.update(subscribe)
        self._confirmed.difference_update(unsubscribe)
        try:
            self._send(self._verb, subscribe)
            self._send(b"sunsubscribe" if self.topology.sharded else b"unsubscribe", unsubscribe)
        except (OSError, RuntimeError) as e:
            self._lose(BusLost(f"sending to Redis failed: {e}"))

    def _send(self, verb: bytes, channels: list[str]) -> None:
        for node, some in self.topology.batches(channels):
            self._links[node].send(command(verb, *some))

    # The connections -------------------------------------------------------------------------

    async def run(self) -> None:
        """Join the bus and stay on it, rejoining with backoff; runs until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while True:
            self._lost = loop.create_future()
            try:
                await self.topology.learn()
                await self._join()
                backoff = 0.1
                await self._stay()
            except (BusLost, RedisError, OSError, TimeoutError) as e:
                log.warning("redis subscription lost (%s); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                await self._drop()

    async def _join(self) -> None:
        """Connect to every node, subscribe to everything held, then run on_joined."""
        loop = asyncio.get_running_loop()
        for node in self.topology.nodes():
            _, writer = await node.connect()
            self._links[node] = _Link(node, writer, self._received, self._link_lost)
        self.state.heard_at = loop.time()
        self._connected = True
        wanted = [BROADCAST, *self._holders]
        self._joining = set(wanted)
        self._joined = joined = loop.create_future()
        self._in_flight.update(wanted)
        self._send(self._verb, wanted)
        lost = self._lost
        assert lost is not None
        await asyncio.wait([joined, lost], return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            lost.result()  # raises BusLost
        self.state.subscribed = True
        self.state.times_subscribed += 1
        log.info("subscribed to the bus (%d user channel(s))", len(wanted) - 1)
        if self.state.times_subscribed > 1:
            metrics.PUBSUB_RECONNECTS.inc()
        if self._on_joined is not None:
            await self._on_joined()
        self._on_bus.set()

    async def wait_joined(self) -> None:
        """Return once the process is on the bus (for start-up and tests)."""
        await self._on_bus.wait()

    async def _stay(self) -> None:
        """PING every ping_every seconds; raise BusLost once a link fails or goes silent.

        Silent means that many PINGs in a row went unanswered, counted, not timed: a
        loop that was itself stalled for a while (a long collection, a debugger) finds
        the answers waiting when it resumes, and must not drop a healthy bus for it.
        """
        lost = self._lost
        assert lost is not None
        limit = max(2, math.ceil(self._dead_after / self._ping_every))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), self._ping_every)
            if lost.done():
                lost.result()
            for link in self._links.values():
                if link.unanswered >= limit:
                    raise BusLost(f"no answer from Redis for {self._dead_after:.0f}s")
                link.send(command("PING"))
                link.unanswered += 1

    def _received(self, link: _Link, data: bytes) -> None:
        """Parse what a connection sent: events to `handle`, confirmations to the waiters."""
        if self._lost is None or self._lost.done() or self._links.get(link.node) is not link:
            return  # a connection being dropped
        self.state.heard_at = asyncio.get_running_loop().time()
        link.unanswered = 0
        message = self._message
        try:
            link.replies.feed(data)
            # [b"message", channel, data]; [b"subscribe", channel, n]; the PONG is
            # [b"pong", b""]: every reply is a sign of life.
            while (reply := link.replies.gets()) is not False:
                if not isinstance(reply, list):
                    if isinstance(reply, hiredis.ReplyError):
                        raise BusLost(f"Redis answered an error: {reply}")
                    continue
                kind = reply[0]
                if kind == message:
                    self._dispatch(reply[2])
                elif kind == self._verb:
                    self._confirm(reply[1].decode())
                elif kind == b"sunsubscribe" and reply[1].decode() in self._confirmed:
                    raise BusLost("a shard dropped a subscription (its slot moved)")
        except (BusLost, hiredis.ProtocolError) as e:
            self._lose(e if isinstance(e, BusLost) else BusLost(str(e)))
        finally:
            if self._after_batch is not None:
                self._after_batch()

    def _confirm(self, channel: str) -> None:
        self._in_flight.discard(channel)
        self._confirmed.add(channel)  # a lingering one: its timer unsubscribes it
        for waiter in self._waiting.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)
        if self._joining:
            self._joining.discard(channel)
            if not self._joining and self._joined is not None and not self._joined.done():
                self._joined.set_result(None)

    def _dispatch(self, raw: bytes) -> None:
        try:
            event = decode(raw)
        except msgspec.DecodeError:
            log.warning("ignored a malformed event on the bus")
            return
        try:
            self._handle(event)
        except Exception:
            log.exception("handling a %s event failed", type(event).__name__)

    def _link_lost(self, link: _Link, error: BusLost) -> None:
        if self._links.get(link.node) is link:  # not one closed by an earlier _drop
            self._lose(error)

    def _lose(self, error: BusLost) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(error)

    async def _drop(self) -> None:
        """Forget the connections: nothing is subscribed, every waiter is let go."""
        self._connected = False
        self.state.subscribed = False
        self._on_bus.clear()
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._confirmed.clear()
        self._in_flight.clear()
        self._joining.clear()
        for timer in self._lingering.values():  # no socket needs them: not joined again
            timer.cancel()
        self._lingering.clear()
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._lost is not None and self._lost.done():
            self._lost.exception()  # retrieved: no "never retrieved" warning
