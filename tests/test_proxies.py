"""The core's pure rules behind issue 15: trusted proxies, safe redirect paths, redaction."""

from __future__ import annotations

import pytest

from notifier import validation
from notifier.errors import ConfigurationError, InputError
from notifier.logs import redact
from notifier.proxies import TrustedProxies

NONE, ONE_HOP = TrustedProxies.parse(""), TrustedProxies.parse("1")
LAN = TrustedProxies.parse("10.0.0.0/8, 127.0.0.1")


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        (NONE, "127.0.0.1", "198.51.100.1", "127.0.0.1"),  # anyone can write the header
        (ONE_HOP, "10.9.9.9", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        (TrustedProxies.parse("2"), "10.9.9.9", "198.51.100.1, 203.0.113.7", "198.51.100.1"),
        (ONE_HOP, "10.9.9.9", None, "10.9.9.9"),
        (LAN, "127.0.0.1", "198.51.100.1, 203.0.113.7, 10.1.1.1", "203.0.113.7"),
        (LAN, "127.0.0.1", "10.2.2.2, 10.1.1.1", "10.2.2.2"),  # all trusted: the left-most
        (LAN, "192.0.2.1", "203.0.113.7", "192.0.2.1"),  # the peer is not one of ours
        (LAN, "127.0.0.1", "not-an-address, 203.0.113.7", "127.0.0.1"),  # malformed: ignored
        (LAN, "127.0.0.1", "203.0.113.7:4711", "203.0.113.7"),
        (LAN, "127.0.0.1", "[2001:db8::7]:4711", "2001:db8::7"),
    ],
)
def test_the_client_is_the_right_most_untrusted_hop(trusted, peer, forwarded, client):
    assert trusted.client(peer, forwarded) == client


def test_only_a_trusted_peer_sets_the_protocol():
    assert NONE.protocol("127.0.0.1", "https", "http") == "http"
    assert LAN.protocol("127.0.0.1", "http, https", "http") == "https"
    assert LAN.protocol("127.0.0.1", "gopher", "http") == "http"


def test_a_bad_setting_is_refused_in_one_line():
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        TrustedProxies.parse("the router")


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/history?before=000000000001", "/history?before=000000000001"),
        ("/\t/evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/x\r\nSet-Cookie: a", "/"),
        ("/\x7f", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_safe_paths(target, safe):
    assert validation.safe_path(target) == safe


@pytest.mark.parametrize("bad", ["a@b.test\r\nBcc: c@d.test", "a b@c.test", "@c.test", "a@b"])
def test_email_addresses_are_plain(bad):
    with pytest.raises(InputError):
        validation.email_address(bad)
    assert validation.email_address("alice.o+deals@example.co.uk")


@pytest.mark.parametrize(
    "line",
    [
        "GET /ws?%74oken=SECRET",
        "GET /ws?%2574oken=SECRET",
        "GET /login?next=/x%3Ftoken%3DSECRET",
        "GET /login?next=%2Fx%253Faccess_token%253DSECRET",
        "GET /x?a=1;PassWord=SECRET",
        "Authorization: Bearer SECRET",
        "seen eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.SECRET in a message",
    ],
)
def test_redaction_judges_decoded_names_and_values(line):
    assert "SECRET" not in redact(line)
    assert redact("GET /history?before=000000000001&q=milk") == (
        "GET /history?before=000000000001&q=milk"
    )
