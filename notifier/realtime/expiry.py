"""When each open socket's token expires, for one periodic sweep instead of a timer each.

A timer per socket costs a timer handle, a bound method and a heap slot in the event loop
(about 0.4 KiB); here a socket costs one small list in a heap. A socket that closes first
is dropped lazily: its entry forgets the socket at once (so nothing keeps it alive) and
leaves the heap when its time comes, or when dead entries outnumber live ones.

Created and used on one thread (the IOLoop's), so it needs no locks.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")

# [expires_at, tie-breaker, item or None once discarded]; a list so discard can clear it.
Entry = list


class ExpiryQueue(Generic[T]):
    """Items by expiry time; `due(now)` takes out those whose time has come."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._order = itertools.count()  # equal times never compare the items themselves
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def add(self, expires_at: float, item: T) -> Entry:
        """Schedule `item`; keep the returned entry to discard it later."""
        entry: Entry = [expires_at, next(self._order), item]
        heapq.heappush(self._heap, entry)
        self._live += 1
        return entry

    def discard(self, entry: Entry | None) -> None:
        """Forget an entry (closed before it expired); a second discard does nothing."""
        if entry is None or entry[2] is None:
            return
        entry[2] = None
        self._live -= 1
        if len(self._heap) > 64 and self._live < len(self._heap) // 2:
            # Mostly dead entries (sockets that closed long before their tokens expire).
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)

    def items(self) -> list[T]:
        """Every live item, in no particular order."""
        return [e[2] for e in self._heap if e[2] is not None]

    def due(self, now: float) -> list[T]:
        """Remove and return every live item that expires at or before `now`, soonest first."""
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            item = entry[2]
            if item is not None:
                entry[2] = None
                self._live -= 1
                out.append(item)
        return out
