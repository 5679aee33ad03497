"""Where the workers may POST a push: the server-side request forgery defence.

A subscription's endpoint is a URL the browser (so, anyone with an account) chose, and
the workers POST to it. In production only `https` endpoints whose host resolves to
public addresses are accepted: loopback, private, link-local (the cloud metadata
services at 169.254.169.254 and fd00:ec2::254), shared, reserved and multicast ranges
are refused, and so are IPv6 forms that carry such an IPv4 address (mapped, 6to4,
Teredo, NAT64). The check runs when the subscription is stored and again at every send,
on every address the name resolves to, and the send connects to the address it checked
(a name that resolves differently a second later cannot redirect it), with a short
timeout, no redirects and a bounded answer. In development and tests, `http` and
`https` endpoints on loopback are accepted too, so the tests run a push service of
their own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from notifier.errors import InputError

MAX_ENDPOINT = 2048  # characters; push services' endpoints are a few hundred
CONNECT_TIMEOUT = 3.0  # seconds
READ_TIMEOUT = 7.0  # seconds for the answer once connected
RESOLVE_TIMEOUT = 3.0  # seconds a web process waits for a name lookup
MAX_ANSWER = 64 * 1024  # bytes of a push service's answer that are read at most
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeEndpoint(InputError):
    """An endpoint the workers must not POST to (scheme, host or address refused)."""

    code = "invalid_endpoint"


class TransportError(OSError):
    """The push service could not be reached or did not answer in time (worth a retry)."""


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: what to connect to and what to ask for."""

    url: str
    scheme: str
    host: str  # a name or an address literal (IPv6 without brackets)
    port: int
    target: str  # path and query


def parse(url: object, allow_loopback: bool) -> Endpoint:
    """Check an endpoint's form (not yet its addresses); UnsafeEndpoint when refused."""
    if not isinstance(url, str) or not url:
        raise UnsafeEndpoint("endpoint must be a URL")
    if len(url) > MAX_ENDPOINT:
        raise UnsafeEndpoint(f"endpoint must be at most {MAX_ENDPOINT} characters")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise UnsafeEndpoint("endpoint must be a URL of printable ASCII characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeEndpoint("endpoint is not a valid URL") from None
    allowed = ("https", "http") if allow_loopback else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeEndpoint("endpoint must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeEndpoint("endpoint must not carry a user name or password")
    if not parts.hostname or parts.fragment:
        raise UnsafeEndpoint("endpoint must name a host, and carry no #fragment")
    host = parts.hostname
    literal = _literal(host)
    if parts.scheme == "http" and (literal is None or not literal.is_loopback):
        raise UnsafeEndpoint("an http endpoint is accepted only on a loopback address")
    if literal is not None:
        check_addresses([literal], allow_loopback)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Endpoint(
        url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target
    )


def check_addresses(addresses: Iterable[Address], allow_loopback: bool) -> None:
    """Every address must be public (or loopback, when allowed); UnsafeEndpoint otherwise."""
    found = False
    for address in addresses:
        found = True
        if not _allowed(address, allow_loopback):
            raise UnsafeEndpoint(
                "endpoint must be on a public address (not loopback, private, link-local, "
                "shared, reserved or multicast)"
            )
    if not found:
        raise UnsafeEndpoint("endpoint's host has no address")


def addresses_of(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    """The addresses in getaddrinfo's answer."""
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def resolve(endpoint: Endpoint, allow_loopback: bool) -> Address:
    """Resolve the endpoint's host and check every address; the one to connect to."""
    literal = _literal(endpoint.host)
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:  # a name server's outage is worth a retry
            raise TransportError(f"{endpoint.host} does not resolve: {e}") from None
        found = addresses_of(infos)
    check_addresses(found, allow_loopback)
    return found[0]


async def check_resolved(endpoint: Endpoint, allow_loopback: bool) -> None:
    """What resolve() checks, without blocking the event loop (the web process's check)."""
    if _literal(endpoint.host) is not None:
        return  # parse() checked it
    lookup = asyncio.get_running_loop().getaddrinfo(
        endpoint.host, endpoint.port, type=socket.SOCK_STREAM
    )
    try:
        infos = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT)
    except (OSError, UnicodeError, TimeoutError):
        raise UnsafeEndpoint("endpoint's host does not resolve") from None
    check_addresses(addresses_of(infos), allow_loopback)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _allowed(address: Address, allow_loopback: bool) -> bool:
    """Public unicast, looking through IPv6 forms that embed an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return _allowed(embedded, allow_loopback)
        if address in _NAT64_LOCAL:
            return False
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not address.is_multicast


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class Answer:
    """What a push service answered (the shape pywebpush reads from a response)."""

    status_code: int
    reason: str
    text: str
    headers: dict[str, str]


class PinnedTransport:
    """What pywebpush posts through (its `requests_session`): checked, pinned, brief.

    Each post resolves the endpoint's host, refuses it unless every address passes
    `check_addresses`, connects to the checked address (TLS still verifies the
    certificate against the host name, sent as SNI and Host), follows no redirect and
    reads at most MAX_ANSWER bytes of the answer.
    """

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback

    def post(
        self, url: str, data: bytes | None = None, headers: Any = None, timeout: Any = None
    ) -> Answer:
        """POST `data` to the endpoint, as requests' post would; raises UnsafeEndpoint."""
        import urllib3  # here: the workers send, the web processes only check endpoints

        endpoint = parse(url, self.allow_loopback)
        address = resolve(endpoint, self.allow_loopback)
        pool: urllib3.HTTPConnectionPool
        limits = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        if endpoint.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                str(address),
                endpoint.port,
                timeout=limits,
                retries=False,
                server_hostname=endpoint.host,
                assert_hostname=endpoint.host,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            pool = urllib3.HTTPConnectionPool(
                str(address), endpoint.port, timeout=limits, retries=False
            )
        sent = {str(k): str(v) for k, v in dict(headers or {}).items()}
        sent["Host"] = urllib.parse.urlsplit(url).netloc
        try:
            answer = pool.urlopen(
                "POST",
                endpoint.target,
                body=data,
                headers=sent,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                body = answer.read(MAX_ANSWER, decode_content=False)
            finally:
                answer.release_conn()
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"{endpoint.host}: {type(e).__name__}") from None
        finally:
            pool.close()
        return Answer(
            answer.status,
            answer.reason or "",
            body.decode("utf-8", "replace"),
            {k: v for k, v in answer.headers.items()},
        )
