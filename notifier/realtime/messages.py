"""The socket's messages, both ways, as tagged unions like the bus events (events.py).

What the server sends (the `json` format) is an envelope `{"type", "data", "timestamp"}`:
one Struct per `type`, tagged by it. What a client sends is a frame tagged the same way:
`ping`, `resume`, `mark-read` or `ack`. Adding one is a Struct here and a line in the union.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from notifier import validation
from notifier.errors import InputError
from notifier.formatting import iso
from notifier.kinds import NotificationType

# Server -> client ------------------------------------------------------------------------


def _now() -> str:
    return iso(datetime.now(UTC))


class Envelope(msgspec.Struct, tag_field="type", kw_only=True):
    """Every envelope: its `type` is the tag, and it says when it was made."""

    timestamp: str = msgspec.field(default_factory=_now)


class Connected(msgspec.Struct):
    """Who the socket speaks for, and how many of their notifications are unread."""

    user_id: str
    username: str
    role: str
    unread_count: int


class ReadData(msgspec.Struct):
    """Notifications that went read (on any tab of the user), and what is left unread."""

    ids: list[str]
    unread_count: int


class UnreadData(msgspec.Struct):
    """The authoritative unread count."""

    unread_count: int


class JobProgressData(msgspec.Struct):
    """How far a user's long job has got."""

    job: str
    job_id: str
    done: int
    total: int


class ErrorData(msgspec.Struct, omit_defaults=True):
    """What went wrong with the client's last frame (or, `behind`, with its replay)."""

    code: str
    message: str
    count: int | msgspec.UnsetType = msgspec.UNSET  # `behind`: how many are in History


class Empty(msgspec.Struct):
    """No data (`{}`)."""


class ConnectionEstablished(Envelope, tag="connection-established"):
    data: Connected


class DealNotification(Envelope, tag=NotificationType.DEAL.value):
    data: dict[str, Any]  # the notification's data, with its id, created_at and unread_count


class SystemMessage(Envelope, tag=NotificationType.SYSTEM.value):
    data: dict[str, Any]  # an announcement, live or from the history


class JobComplete(Envelope, tag=NotificationType.JOB.value):
    data: dict[str, Any]


class NotificationRead(Envelope, tag="notification-read"):
    data: ReadData


class UnreadCount(Envelope, tag="unread-count"):
    data: UnreadData


class JobProgress(Envelope, tag="job-progress"):
    data: JobProgressData


class Pong(Envelope, tag="pong"):
    data: Empty = msgspec.field(default_factory=Empty)


class Error(Envelope, tag="error"):
    data: ErrorData


ServerMessage = (
    ConnectionEstablished
    | DealNotification
    | SystemMessage
    | JobComplete
    | NotificationRead
    | UnreadCount
    | JobProgress
    | Pong
    | Error
)

# A stored notification's envelope, by its type.
NOTIFICATION_ENVELOPES: dict[str, type[DealNotification | SystemMessage | JobComplete]] = {
    NotificationType.DEAL: DealNotification,
    NotificationType.SYSTEM: SystemMessage,
    NotificationType.JOB: JobComplete,
}

_encoder = msgspec.json.Encoder()


def encode(message: ServerMessage) -> str:
    """An envelope as the JSON text sent on the socket."""
    return _encoder.encode(message).decode()


def error(code: str, message: str) -> str:
    """An `error` envelope."""
    return encode(Error(data=ErrorData(code, message)))


# Client -> server ------------------------------------------------------------------------


class ClientFrame(msgspec.Struct, tag_field="type"):
    """Every frame a client sends: its `type` is the tag."""


class Ping(ClientFrame, tag="ping"):
    """Answered with a `pong`."""


class Resume(ClientFrame, tag="resume"):
    """Replay from after `last_id` (delivery.start_from judges it: any value is taken)."""

    last_id: Any = None


class Ack(ClientFrame, tag="ack"):
    """A person saw everything up to `last_id` (parse_id judges it)."""

    last_id: Any = None


class MarkRead(ClientFrame, tag="mark-read", forbid_unknown_fields=True):
    """As POST /api/notifications/read: `ids` or `all`, judged by the same reader
    (notifier.notifications.bulk.ReadRequest)."""

    ids: Any = msgspec.UNSET
    all: Any = msgspec.UNSET

    def body(self) -> dict[str, Any]:
        """The request body it stands for: the fields the client sent."""
        return {
            f: getattr(self, f)
            for f in self.__struct_fields__
            if getattr(self, f) is not msgspec.UNSET
        }


Frame = Ping | Resume | Ack | MarkRead
FRAMES: dict[object, type[Frame]] = {
    cls.__struct_config__.tag: cls for cls in (Ping, Resume, Ack, MarkRead)
}


class UnknownFrame(ValueError):
    """Not JSON, not an object, or no frame type of ours."""


def read_frame(raw: str | bytes) -> Frame:
    """The client's frame. UnknownFrame when it is none of ours; InputError when it is a
    known one with fields it does not have.

    Read with json.loads first (as request bodies are), so what it accepts — lone
    surrogates in strings, deep nesting refused as RecursionError — is what it was.
    """
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # "[" * 50_000 recurses
        raise UnknownFrame from None
    try:
        return msgspec.convert(msg, Frame)
    except (msgspec.ValidationError, UnicodeEncodeError) as e:  # "\ud800" as a type, say
        tag = msg.get("type") if isinstance(msg, dict) else None
        shape = FRAMES.get(tag) if isinstance(tag, str) else None
        if shape is None:
            raise UnknownFrame from None
        raise InputError(*validation.explain(shape, str(e))) from None
