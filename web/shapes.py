"""The JSON API's response bodies that are the web layer's own (the core's shapes live
with the core: Notification, Preferences, ...). Handlers answer with these Structs, and
web/openapi.py generates their schemas from them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

UnreadTotal = Annotated[int, msgspec.Meta(ge=0)]


class Token(msgspec.Struct):
    """A bearer token for the API and the socket."""

    token: str
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, msgspec.Meta(description="seconds")]


class Me(msgspec.Struct):
    """Who the token speaks for."""

    user_id: str
    username: str
    role: Literal["shopper", "admin"]


class PriceCreated(msgspec.Struct):
    """A recorded price."""

    price_id: str


class Job(msgspec.Struct):
    """A queued job; its result comes as a job-complete notification."""

    job_id: str


class AnnouncementCreated(msgspec.Struct):
    """A stored (and sent) announcement."""

    id: str


class UnreadCount(msgspec.Struct):
    """What is left unread."""

    unread_count: UnreadTotal


class BulkOutcome(msgspec.Struct):
    """How many a bulk action changed, whether more match, and what is left unread."""

    changed: Annotated[int, msgspec.Meta(ge=0)]
    more: bool
    unread_count: UnreadTotal


class PushPublicKey(msgspec.Struct):
    """The key browsers subscribe to Web Push with."""

    public_key: Annotated[
        str,
        msgspec.Meta(
            description="the VAPID public key (an uncompressed P-256 point, base64url): "
            "PushManager.subscribe's applicationServerKey"
        ),
    ]


class PushSubscribed(msgspec.Struct):
    """A stored push subscription."""

    endpoint: str


class Readiness(msgspec.Struct):
    """Whether this process can serve sockets (GET /readyz), and what is not ready."""

    status: Literal["ok", "unavailable"]
    down: list[str]
    checks: dict[str, str]


RESPONSES = [
    Token,
    Me,
    PriceCreated,
    Job,
    AnnouncementCreated,
    UnreadCount,
    BulkOutcome,
    PushPublicKey,
    PushSubscribed,
    Readiness,
]
