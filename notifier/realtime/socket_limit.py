"""A socket's arrival and departure in Redis: one round trip each.

At most N sockets per user across every web process: a user's sockets are a sorted set
(socket id -> opened at) under `notifier:sockets:<user>`, and one too many evicts the
oldest. The same script checks the token's version against the cached one
(notifier/accounts/revocation.py), spends from the user's budget and writes the user's
presence entry (notifier/realtime/presence.py), so a handshake costs one Redis round
trip, sent on the process's shared link (notifier/realtime/resp.py). A revoked token,
or a user out of budget, records nothing.

The budget is a token bucket per user (`notifier:budget:<user>`), shared by all their
sockets on every process: each handshake and each `resume` costs one. BUDGET of them in
a burst (a deploy reconnects every tab at once), then BUDGET_REFILL a second: a client
that reconnects in a loop, or resumes from long ago again and again, is held to that
however many sockets it opens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from notifier.accounts import revocation
from notifier.realtime import presence
from notifier.realtime.resp import RedisLink, Script

KEY = "notifier:sockets:{}"
BUDGET_KEY = "notifier:budget:{}"
TTL = 24 * 3600  # a user with no socket activity for a day has their set dropped
BUDGET = 40  # handshakes and resumes a user may make at once...
BUDGET_REFILL = 1.0  # ...and then this many a second

# KEYS[1]: the budget. ARGV: now, capacity, refill per second, cost. True when spent.
_SPEND = """
local function spend(key, now, capacity, rate, cost)
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1]) or capacity
  local at = tonumber(bucket[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  if tokens < cost then return false end
  redis.call('HSET', key, 'tokens', tokens - cost, 'at', now)
  redis.call('EXPIRE', key, math.ceil(capacity / rate) + 1)
  return true
end
"""
_SPENT = Script(
    _SPEND + "return spend(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), "
    "tonumber(ARGV[3]), tonumber(ARGV[4])) and 1 or 0"
)
# KEYS: sockets, presence, token version, budget, the online set. ARGV: socket id, now,
# sockets TTL, per-user limit, process, presence expires_at, presence TTL, the token's
# version, budget capacity, refill, user id. Returns {cached version or '', status,
# evicted socket ids (oldest first)}: status 'ok', 'revoked' (the version is newer, or
# the user is gone) or 'limited' (out of budget); nothing is recorded unless 'ok'.
_ARRIVED = Script(
    _SPEND
    + """
local version = redis.call('GET', KEYS[3])
if version and (tonumber(version) < 0 or tonumber(version) > tonumber(ARGV[8])) then
  return {version, 'revoked', {}}
end
if not spend(KEYS[4], tonumber(ARGV[2]), tonumber(ARGV[9]), tonumber(ARGV[10]), 1) then
  return {version or '', 'limited', {}}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local over = redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
if #over > 0 then
  redis.call('ZREM', KEYS[1], unpack(over))
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('ZADD', KEYS[5], 'GT', ARGV[6], ARGV[11])
return {version or '', 'ok', over}
"""
)
# KEYS: sockets, presence. ARGV: socket id, process, presence expires_at ('' to leave it).
_LEFT = Script("""
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
""")


@dataclass(frozen=True)
class Arrival:
    """What Redis said of a new socket."""

    revoked: bool  # the token's version is older than the user's: nothing was recorded
    limited: bool  # the user is out of budget: nothing was recorded
    cached_version: int | None  # the user's token version in Redis (None: not cached)
    evicted: list[str]  # the oldest sockets now over the limit (already forgotten)

    @property
    def recorded(self) -> bool:
        """Whether Redis now counts the socket (and must be told when it closes)."""
        return not (self.revoked or self.limited)


class SocketLimit:
    """Which sockets a user holds everywhere; opening one too many evicts the oldest."""

    def __init__(self, link: RedisLink, per_user: int) -> None:
        self._link = link
        self.per_user = per_user

    async def arrived(
        self, user_id: str, socket_id: str, process: str, token_version: int
    ) -> Arrival:
        """Check the token's version and the user's budget; record the socket and the
        user's presence on `process` unless refused (one round trip)."""
        now = time.time()
        keys = [
            KEY.format(user_id),
            presence.KEY.format(user_id),
            revocation.key(user_id),
            BUDGET_KEY.format(user_id),
            presence.ONLINE_KEY,
        ]
        expires, ttl = now + presence.TTL, int(presence.TTL)
        args = [socket_id, now, TTL, self.per_user, process, expires, ttl, token_version]
        version, status, over = await self._link.run(
            _ARRIVED, keys, [*args, BUDGET, BUDGET_REFILL, user_id]
        )
        return Arrival(
            revoked=status == b"revoked",
            limited=status == b"limited",
            cached_version=int(version) if version else None,
            evicted=[m.decode() for m in over],
        )

    async def spend(self, user_id: str) -> bool:
        """Spend one of the user's budget (a `resume`); False when there is none left."""
        keys = [BUDGET_KEY.format(user_id)]
        return bool(await self._link.run(_SPENT, keys, [time.time(), BUDGET, BUDGET_REFILL, 1]))

    async def left(self, user_id: str, socket_id: str, process: str, last_here: bool) -> None:
        """Forget a socket; when it was the user's last on `process`, linger there (one trip)."""
        keys = [KEY.format(user_id), presence.KEY.format(user_id)]
        linger = str(time.time() + presence.LINGER) if last_here else ""
        await self._link.run(_LEFT, keys, [socket_id, process, linger])
