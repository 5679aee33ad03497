"""One socket's delivery: the user's notifications in seq order, each at most once.

The socket remembers the last seq it sent. A live notification that is the next one goes
out; a repeat is dropped; one that skips ahead means the bus lost something (a user's
seqs have no holes), so the gap is replayed from storage while live ones are held back,
then the held ones follow in order. The same replay serves `last_id` on connect, the
client's `resume` message and every socket after its process rejoined the bus.

Writes go through a small `Transport` (the web layer's socket) and replays read through
a small `Store` (MongoDB), so every ordering and replay case is testable without servers.
Like the registry, an OrderedDelivery is created and used only on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pymongo.errors import PyMongoError

from notifier import metrics
from notifier.errors import InputError
from notifier.notifications.state import UserState
from notifier.notifications.store import parse_id, to_json
from notifier.realtime import messages
from notifier.realtime.disconnect import STORAGE_UNAVAILABLE, TOO_SLOW
from notifier.realtime.registry import Render

log = logging.getLogger(__name__)

STALLED_AT = 200  # unflushed messages past which a socket with no progress is dropped
MAX_UNFLUSHED = 5000  # the hard bound on what one socket may hold unsent
REPLAY_BATCH = 200  # notifications read from storage per query while replaying
REPLAY_LIMIT = 500  # the most one replay sends: the rest are in History (REPLAY_LIMIT)
FRESH_LIST = 20  # what a client with an unusable last_id gets instead


class Flushing(Protocol):
    """A write the kernel did not take at once; done when it is flushed (or failed)."""

    def add_done_callback(self, fn: Callable[[Any], None], /) -> None: ...


class Transport(Protocol):
    """The socket underneath, as the web layer provides it."""

    def send_text(self, payload: str) -> bool | Flushing:
        """True when the kernel took it all, False when the socket is gone, else pending."""
        ...

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket (its close handler then unregisters it)."""
        ...


class _Closed:
    """The transport of a delivery whose socket closed: nothing goes anywhere."""

    def send_text(self, payload: str) -> bool:
        return False

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        pass


CLOSED = _Closed()


class Store(Protocol):
    """Where replays read from (notifier.notifications.store.NotificationRepository)."""

    async def state(self, user_id: str) -> UserState:
        """The user's newest seq and unread count (reads of many sockets go together)."""
        ...

    async def after(self, user_id: str, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored notifications newer than `seq`, oldest first."""
        ...


class Payloads(Protocol):
    """Renders what a replay sends (the same renderer the writers use)."""

    def notification(self, event: dict[str, Any], fmt: str) -> str: ...

    def unread(self, unread: int, fmt: str) -> str: ...

    def behind(self, count: int, fmt: str) -> str: ...


class OrderedDelivery:
    """A socket as the registry sees it: ordered, gap-filling, bounded delivery."""

    # One per open socket: slots keep it to a couple of hundred bytes.
    __slots__ = (
        "__weakref__",
        "_clock",
        "_filling",
        "_flushed_at",
        "_forget",
        "_held",
        "_payloads",
        "_queued",
        "_read_again",
        "_refresh_unread",
        "_replay_limit",
        "_stall_seconds",
        "_store",
        "_transport",
        "_unflushed",
        "format",
        "last_seq",
        "socket_id",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        format: str,
        socket_id: str,
        transport: Transport,
        store: Store,
        payloads: Payloads,
        forget: Callable[[OrderedDelivery], None],
        stall_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        replay_limit: int = REPLAY_LIMIT,
    ) -> None:
        self.user_id = user_id
        self.format = format
        self.socket_id = socket_id
        self._transport = transport
        self._store = store
        self._payloads = payloads
        self._forget = forget  # unregisters a socket that failed or was dropped
        self._stall_seconds = stall_seconds
        self._replay_limit = replay_limit
        self._clock = clock
        # Until the greeting is out, other messages queue here.
        self._queued: list[str] | None = []
        # The last notification seq sent; None until start_from() knows where to begin.
        self.last_seq: int | None = None
        self._held: list[tuple[int, Render]] = []
        self._filling: asyncio.Task[None] | None = None
        self._read_again = False
        self._refresh_unread = False
        self._unflushed = 0
        self._flushed_at = 0.0

    # What the registry and the bus call ----------------------------------------------------

    def send(self, payload: str) -> bool:
        """Write one message; a socket that fails or falls too far behind is dropped."""
        if self._queued is not None:
            self._queued.append(payload)
            return True
        if self.stalled():
            # The client stopped reading: drop it rather than buffer without bound. It
            # resumes from its last_id when it comes back.
            self._forget(self)
            self._transport.close(*TOO_SLOW)
            return False
        written = self._transport.send_text(payload)
        if written is False:
            self._forget(self)
            return False
        if written is not True:  # the kernel's buffer is full: count it until it is flushed
            if not self._unflushed:
                self._flushed_at = self._clock()  # the client starts lagging from now
            self._unflushed += 1
            written.add_done_callback(self._written)
        return True

    def offer(self, seq: int, render: Render) -> None:
        """A live notification: send it if it is the next one, drop a repeat, fill a gap."""
        if self.last_seq is None or self._filling is not None:
            self._held.append((seq, render))
        elif seq == self.last_seq + 1:
            self.last_seq = seq
            self.send(render(self.format))
        elif seq > self.last_seq:
            self._held.append((seq, render))
            metrics.GAP_FILLS.inc()
            self.resync()

    def resync(self, refresh_unread: bool = False) -> None:
        """Replay from storage whatever came after the last seq sent (once at a time)."""
        self._refresh_unread |= refresh_unread
        if self._filling is not None:
            self._read_again = True  # the running replay may have read before the news
        elif self.last_seq is not None:
            self._filling = asyncio.ensure_future(self._fill())

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket."""
        self._transport.close(code, reason)

    # What the socket's own handler calls ---------------------------------------------------

    def greet(self, greeting: str, after: list[str] | tuple[str, ...] = ()) -> None:
        """Send the first message, then whatever queued meanwhile, then `after`."""
        queued, self._queued = self._queued or [], None
        for payload in (greeting, *queued, *after):
            self.send(payload)

    def start_from(self, last_id: object, max_seq: int) -> None:
        """Begin (again) after `last_id`; an unusable one gets an error and a fresh list.

        Without `last_id` only what comes after `max_seq` (the newest stored) is sent.
        """
        start = max_seq
        if last_id is not None:
            try:
                start = parse_id(last_id, "last_id")
                if start > max_seq:
                    raise InputError("last_id is not one of your notifications")
            except InputError as e:
                self.send(messages.error("invalid_last_id", e.message))
                start = max(0, max_seq - FRESH_LIST)
        self.last_seq = start
        if start < max_seq or self._held or self._refresh_unread:
            self.resync()

    @property
    def transport(self) -> Transport:
        """The socket underneath."""
        return self._transport

    @property
    def started(self) -> bool:
        """Whether start_from() ran: the socket is live and has heard every broadcast."""
        return self.last_seq is not None

    def stop(self) -> None:
        """The socket closed: stop any replay, and let go of the socket.

        The handler holds its delivery and the delivery its handler: dropping the
        transport here lets a closed socket be freed by reference counting alone, so the
        process can keep long-lived sockets out of the collector's reach (gc.freeze)
        without leaking the closed ones.
        """
        if self._filling is not None:
            self._filling.cancel()
        self._transport = CLOSED

    def stalled(self) -> bool:
        """Many messages unsent and none flushed for a while, or far too many unsent."""
        if self._unflushed < STALLED_AT:  # the common case, decided without a clock read
            return False
        if self._unflushed >= MAX_UNFLUSHED:
            return True
        return self._clock() - self._flushed_at > self._stall_seconds

    # Replay ---------------------------------------------------------------------------------

    async def _fill(self) -> None:
        try:
            while True:
                # Everything held now was published, so stored, before this replay reads.
                ready, self._held, self._read_again = self._held, [], False
                # The user's state first (one query for the sockets of a hundred users when
                # a process rejoins the bus): most sockets missed nothing and read no more.
                state = await self._store.state(self.user_id)
                assert self.last_seq is not None
                newest = max([state.max_seq, *(seq for seq, _ in ready)])
                # Far behind (a resume from long ago): the newest REPLAY_LIMIT only, and
                # word of how many older ones are in History, never the whole history.
                skipped = max(0, newest - self._replay_limit - self.last_seq)
                self.last_seq += skipped
                if newest > self.last_seq:
                    await self._replay_from_store(state.unread_count)
                if skipped:
                    self.send(self._payloads.behind(skipped, self.format))
                for seq, render in sorted(ready, key=lambda held: held[0]):
                    assert self.last_seq is not None
                    if seq > self.last_seq:
                        self.last_seq = seq
                        self.send(render(self.format))
                if self._refresh_unread:
                    self._refresh_unread = False
                    self.send(self._payloads.unread(state.unread_count, self.format))
                # Nothing may be left held when the replay stops (offers hold while it runs).
                if not self._held and not self._read_again:
                    return
        except PyMongoError:
            log.exception("replay for a socket failed; closing it so the client resumes")
            self.close(*STORAGE_UNAVAILABLE)
        finally:
            self._filling = None

    async def _replay_from_store(self, unread: int) -> None:
        while True:
            assert self.last_seq is not None
            docs = await self._store.after(self.user_id, self.last_seq, REPLAY_BATCH)
            for doc in docs:
                self.last_seq = doc["seq"]
                event = {"notification": to_json(doc), "unread_count": unread}
                self.send(self._payloads.notification(event, self.format))
            if len(docs) < REPLAY_BATCH:
                return

    def _written(self, future: Any) -> None:
        self._unflushed -= 1
        self._flushed_at = self._clock()
        if future.cancelled() or future.exception() is not None:
            self._forget(self)
