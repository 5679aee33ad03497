"""How many messages a client may send: a token bucket per socket."""

from __future__ import annotations

import time
from collections.abc import Callable

MESSAGES_PER_MINUTE = 100  # client messages; beyond this they get an error and are ignored


class TokenBucket:
    """`per_minute` messages, refilled continuously; a burst may use all of them at once."""

    __slots__ = ("_allowance", "_at", "_clock", "per_minute")

    def __init__(
        self, per_minute: int = MESSAGES_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._allowance, self._at = float(per_minute), clock()

    def take(self) -> bool:
        """Spend one message; False when none is left."""
        now = self._clock()
        refill = (now - self._at) * self.per_minute / 60
        self._allowance = min(float(self.per_minute), self._allowance + refill)
        self._at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True
