"""Which proxies' X-Forwarded-For and X-Forwarded-Proto count (TRUSTED_PROXIES)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from notifier.errors import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """A count of proxy hops in front of us (a platform router), or the proxies' networks.

    Nothing trusted (the default) means the client is the socket's peer and forwarded
    headers are ignored: anyone can write them.
    """

    hops: int = 0
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> TrustedProxies:
        """`""` (none), a hop count such as `1`, or networks: `10.0.0.0/8, 127.0.0.1`."""
        raw = raw.strip()
        if not raw:
            return cls()
        if raw.isascii() and raw.isdigit():
            return cls(hops=int(raw))
        try:
            networks = tuple(
                ipaddress.ip_network(part.strip(), strict=False)
                for part in raw.split(",")
                if part.strip()
            )
        except ValueError:
            raise ConfigurationError(
                f"TRUSTED_PROXIES must be a number of hops or a list of networks, not {raw!r}"
            ) from None
        return cls(networks=networks)

    def __bool__(self) -> bool:
        return bool(self.hops or self.networks)

    def trusts_peer(self, peer: str) -> bool:
        """Whether the socket's peer is one of our proxies (its forwarded headers count)."""
        return self.hops > 0 or _within(peer, self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the right-most hop that is not one of our proxies."""
        if not self.trusts_peer(peer) or not forwarded_for:
            return peer
        hops = [_without_port(h.strip()) for h in forwarded_for.split(",") if h.strip()]
        if not hops or not all(_is_address(h) for h in hops):
            return peer  # a malformed header is not believed at all
        chain = [*hops, peer]
        if self.hops:
            return chain[max(0, len(chain) - 1 - self.hops)]
        for address in reversed(chain):
            if not _within(address, self.networks):
                return address
        return chain[0]

    def protocol(self, peer: str, forwarded_proto: str | None, default: str) -> str:
        """http or https: a trusted proxy's X-Forwarded-Proto, else how we were reached."""
        if not self.trusts_peer(peer) or not forwarded_proto:
            return default
        last = forwarded_proto.split(",")[-1].strip().lower()
        return last if last in ("http", "https") else default


def _without_port(hop: str) -> str:
    """Some proxies write "203.0.113.7:41234" or "[2001:db8::1]:41234"."""
    if hop.startswith("[") and "]" in hop:
        return hop[1 : hop.index("]")]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    if not networks:  # the default: asked three times a connection, parsing nothing
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)
