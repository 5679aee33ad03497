"""The VAPID key pair (RFC 8292) that signs every push: P-256, as base64url text.

VAPID_PRIVATE_KEY is the raw 32-byte private scalar in base64url (what `python -m
notifier vapid-keys` prints, and what the web-push tools of other languages use; a
base64url DER key is read too). The public key is derived from it: browsers subscribe
with it (GET /api/push/public-key) and push services check each push's signature with it.
A module of its own that imports nothing of notifier's but its errors: settings checks
the key at start and notifier.push signs with it, so neither needs the other.

cryptography and py-vapid are imported when a key is first used to sign or to derive
the public key, not at start: they cost a web process 9 MB, which each of WEB_CONCURRENCY
processes would carry until its first push subscription. A new key, and the start-up
check of a raw key, need only the curve's order.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
from typing import TYPE_CHECKING

from notifier.errors import ConfigurationError

if TYPE_CHECKING:
    from py_vapid import Vapid02

# The order of P-256's base point (SEC 2, section 2.4.2): a private key is an integer in
# [1, ORDER - 1], written as 32 bytes.
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# RFC 8292: the subject is a mailto: or https: URI the push service can reach us at.
_SUBJECT = re.compile(r"(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)", re.IGNORECASE)


def b64url(raw: bytes) -> str:
    """base64url without padding, as the Push API writes keys."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """The bytes of base64url text (padding optional); ValueError when it is not."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_private_key() -> str:
    """A fresh private key, as VAPID_PRIVATE_KEY takes it: uniform in [1, ORDER - 1]."""
    return b64url((1 + secrets.randbelow(ORDER - 1)).to_bytes(32, "big"))


def check_private_key(private_key: str) -> None:
    """ConfigurationError unless the key can sign (what `signer` would refuse).

    A raw key as new_private_key writes it (43 characters of base64url for an integer in
    [1, ORDER - 1]) is accepted here without cryptography; anything else, a DER key
    included, goes to `signer`, which decides. This path only accepts, never refuses.
    """
    text = private_key.strip()
    if re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        raw = unb64url(text)
        if b64url(raw) == text and 1 <= int.from_bytes(raw, "big") < ORDER:
            return
    signer(private_key)


def signer(private_key: str) -> Vapid02:
    """py-vapid's signer for the key; ConfigurationError when it is not a P-256 key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02

    try:
        vapid = Vapid02.from_string(private_key.strip())
        if not isinstance(vapid.private_key.curve, ec.SECP256R1):
            raise ValueError("not a P-256 key")
    except Exception:  # py-vapid raises whatever its parsers raise
        raise ConfigurationError(
            "VAPID_PRIVATE_KEY is not a P-256 private key in base64url "
            "(`python -m notifier vapid-keys` prints a new pair)"
        ) from None
    return vapid


@functools.cache
def public_key(private_key: str) -> str:
    """The public key (uncompressed point, base64url): the browsers' applicationServerKey."""
    from cryptography.hazmat.primitives import serialization

    point = signer(private_key).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


def check_subject(subject: str) -> str:
    """VAPID_SUBJECT must be a mailto: (or https:) URI; ConfigurationError otherwise."""
    if not _SUBJECT.fullmatch(subject):
        raise ConfigurationError(
            f"VAPID_SUBJECT must be a mailto: address (or an https: URL), not {subject!r}"
        )
    return subject
