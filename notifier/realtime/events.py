"""The events on the bus: one msgspec Struct per kind, tagged by the `kind` field.

Writers build them (with the socket payloads already rendered, see render.py) and encode
them once; each web process decodes each message once, into the right class, with
`decode`. Adding a kind (job-progress, say) is a new Struct here and a line in `Event`.
"""

from __future__ import annotations

import msgspec


class Rendered(msgspec.Struct, frozen=True):
    """What the sockets get, made by the writer: the htmx fragment and the JSON envelope."""

    html: str
    json: str

    def payload(self, fmt: str) -> str:
        """The payload for a socket of format `fmt` ("html" or "json")."""
        return self.json if fmt == "json" else self.html


class NotificationEvent(Rendered, frozen=True, tag="notification", tag_field="kind"):
    """A user's new notification, stored in MongoDB before it was published."""

    user_id: str
    seq: int
    type: str
    created_at: float  # epoch seconds, for the delivery latency (no date parsing per message)


class ReadEvent(Rendered, frozen=True, tag="read", tag_field="kind"):
    """Some of a user's notifications were marked read."""

    user_id: str
    ids: list[str]


class AnnouncementEvent(Rendered, frozen=True, tag="announcement", tag_field="kind"):
    """A system announcement for every connected user."""

    id: str
    created_at: str  # ISO 8601: web processes keep the newest, so connects skip a query


class JobProgressEvent(Rendered, frozen=True, tag="job-progress", tag_field="kind"):
    """How far a user's long job has got (live only: the result is a stored job-complete)."""

    user_id: str
    job_id: str


class LogoutEvent(msgspec.Struct, frozen=True, tag="logout", tag_field="kind"):
    """A user logged out: close their sockets everywhere."""

    user_id: str


class EvictEvent(msgspec.Struct, frozen=True, tag="evict", tag_field="kind"):
    """Sockets over a user's limit, to be closed by the process that holds them."""

    user_id: str
    socket_ids: list[str]


Event = (
    NotificationEvent | ReadEvent | AnnouncementEvent | JobProgressEvent | LogoutEvent | EvictEvent
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """An event as the compact JSON published on the bus."""
    return _encoder.encode(event)


def decode(raw: bytes | str) -> Event:
    """The event in a bus message; msgspec.DecodeError (a ValueError) when it is not one."""
    return _decoder.decode(raw)
