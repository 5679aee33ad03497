"""The service worker's acknowledgement: a signed token in each deal push.

A push's payload carries a token naming the user, the newest notification it shows and
an expiry, signed with a key derived from JWT_SECRET (HMAC-SHA256, its own label, so it
is never an access token nor an unsubscribe link). The service worker posts it back to
`POST /api/push/ack` once the notification is shown, without cookies: the token is the
whole proof, it can do one thing (acknowledge that user's notifications up to that one,
as the page's `ack` does) and only the browser could decrypt it. See SECURITY.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Annotated

import msgspec

from notifier import validation
from notifier.errors import InputError

LIFETIME = 2 * 86400  # seconds: the push's TTL (a day) and a day to show it
MAX_TOKEN = 512  # characters


class InvalidAck(InputError):
    """An acknowledgement token that is malformed, expired or not signed by us."""

    code = "invalid_token"


class PushAck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the service worker posts when it showed a pushed deal (POST /api/push/ack)."""

    token: Annotated[
        str,
        validation.must(
            "must be the push's acknowledgement token",
            code=InvalidAck.code,
            description="the push payload's `ack`",
        ),
    ]


@dataclass(frozen=True)
class Ack:
    """What a valid token acknowledges."""

    user_id: str
    seq: int


def ack_token(secret: str, user_id: str, seq: int, now: float | None = None) -> str:
    """A token acknowledging the user's notifications up to `seq`, valid for LIFETIME."""
    expires = int((now if now is not None else time.time()) + LIFETIME)
    payload = _b64(
        json.dumps({"u": user_id, "s": seq, "x": expires}, separators=(",", ":")).encode()
    )
    return f"{payload}.{_sign(secret, payload)}"


def read_ack_token(secret: str, token: object, now: float | None = None) -> Ack:
    """What a token acknowledges; InvalidAck when it is not one of ours or has expired."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.isascii():
        raise InvalidAck("token must be the push's acknowledgement token")
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise InvalidAck("the token is not valid")
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        user_id, seq, expires = str(data["u"]), int(data["s"]), int(data["x"])
    except (ValueError, KeyError, TypeError):
        raise InvalidAck("the token is not valid") from None
    if expires < (now if now is not None else time.time()):
        raise InvalidAck("the token has expired")
    return Ack(user_id, seq)


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(("push-ack:" + secret).encode(), payload.encode(), hashlib.sha256)
    return _b64(digest.digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
