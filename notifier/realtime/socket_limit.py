"""A socket's arrival and departure in Redis: one round trip each.

At most N sockets per user across every web process: a user's sockets are a sorted set
(socket id -> opened at) under `notifier:sockets:<user>`, and one too many evicts the
oldest. The same script checks the token's version against the cached one
(notifier/accounts/revocation.py) and writes the user's presence entry
(notifier/realtime/presence.py), so a handshake costs one Redis round trip, sent on the
process's shared link (notifier/realtime/resp.py). A revoked token records nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from notifier.accounts import revocation
from notifier.realtime import presence
from notifier.realtime.resp import RedisLink, Script

KEY = "notifier:sockets:{}"
TTL = 24 * 3600  # a user with no socket activity for a day has their set dropped
# KEYS: sockets, presence, token version. ARGV: socket id, now, sockets TTL, per-user
# limit, process, presence expires_at, presence TTL, the token's version.
# Returns {cached version or '', evicted socket ids (oldest first)}; {version, false}
# when the token is revoked (the version is newer, or the user is gone).
_ARRIVED = Script("""
local version = redis.call('GET', KEYS[3])
if version and (tonumber(version) < 0 or tonumber(version) > tonumber(ARGV[8])) then
  return {version, false}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local over = redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
if #over > 0 then
  redis.call('ZREM', KEYS[1], unpack(over))
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {version or '', over}
""")
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
    cached_version: int | None  # the user's token version in Redis (None: not cached)
    evicted: list[str]  # the oldest sockets now over the limit (already forgotten)


class SocketLimit:
    """Which sockets a user holds everywhere; opening one too many evicts the oldest."""

    def __init__(self, link: RedisLink, per_user: int) -> None:
        self._link = link
        self.per_user = per_user

    async def arrived(
        self, user_id: str, socket_id: str, process: str, token_version: int
    ) -> Arrival:
        """Check the token's version; record the socket and the user's presence on
        `process` unless it is revoked (one round trip)."""
        now = time.time()
        keys = [KEY.format(user_id), presence.KEY.format(user_id), revocation.key(user_id)]
        expires, ttl = now + presence.TTL, int(presence.TTL)
        args = [socket_id, now, TTL, self.per_user, process, expires, ttl, token_version]
        version, over = await self._link.run(_ARRIVED, keys, args)
        cached = int(version) if version else None
        if over is None:
            return Arrival(True, cached, [])
        return Arrival(False, cached, [m.decode() for m in over])

    async def left(self, user_id: str, socket_id: str, process: str, last_here: bool) -> None:
        """Forget a socket; when it was the user's last on `process`, linger there (one trip)."""
        keys = [KEY.format(user_id), presence.KEY.format(user_id)]
        linger = str(time.time() + presence.LINGER) if last_here else ""
        await self._link.run(_LEFT, keys, [socket_id, process, linger])
