"""Bus events without any server: encoding, decoding, the writer's payloads, start-up checks."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime

import pytest

from notifier.realtime import events
from notifier.realtime.events import (
    AnnouncementEvent,
    EvictEvent,
    LogoutEvent,
    NotificationEvent,
    ReadEvent,
)
from notifier.realtime.render import PayloadRenderer
from notifier.realtime.subscriber import Subscriber, Topology
from web.frames import iostream_problems, stream_problems
from web.render import Renderer

RENDERER = PayloadRenderer()
NOTIFICATION = {
    "id": "000000000007",
    "type": "deal-notification",
    "created_at": "2026-01-01T12:00:00.000Z",
    "read": False,
    "data": {
        "notification_id": "000000000007",
        "message": "You have 1 new deal(s) on your watched items!",
        "user_id": "u1",
        "deals": [
            {
                "item_name": "Milk <2%>",
                "best_price_in_cents": 249,
                "store_name": "A",
                "store_id": "a",
            }
        ],
    },
}
ANNOUNCEMENT = {
    "id": "a1",
    "message": "Maintenance <tonight>",
    "severity": "warning",
    "created_at": "2026-01-01T12:00:00.000Z",
}

KINDS = {
    NotificationEvent: "notification",
    ReadEvent: "read",
    AnnouncementEvent: "announcement",
    LogoutEvent: "logout",
    EvictEvent: "evict",
}
EVERY_KIND = [
    RENDERER.notification_event("u1", NOTIFICATION, 3),
    RENDERER.read_event("u1", ["000000000001", "000000000002"], 1),
    RENDERER.announcement_event(ANNOUNCEMENT),
    LogoutEvent(user_id="u1"),
    EvictEvent(user_id="u1", socket_ids=["h:1:80:abc", "h:2:80:def"]),
]


@pytest.mark.parametrize("event", EVERY_KIND, ids=lambda e: type(e).__name__)
def test_every_kind_of_event_survives_the_bus(event: events.Event) -> None:
    raw = events.encode(event)
    assert json.loads(raw)["kind"] == KINDS[type(event)]
    back = events.decode(raw)
    assert type(back) is type(event) and back == event


def test_a_notification_event_carries_what_delivery_needs() -> None:
    event = RENDERER.notification_event("u1", NOTIFICATION, 3)
    assert (event.user_id, event.seq, event.type) == ("u1", 7, "deal-notification")
    assert event.created_at == datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"no": "kind"}',
        b'{"kind": "job-progress-v9", "user_id": "u1"}',
        b'{"kind": "logout"}',
        b'{"kind": "logout", "user_id": 5}',
        b'{"kind": "evict", "user_id": "u1", "socket_ids": "all"}',
        b'{"kind": "notification", "user_id": "u1", "seq": 1}',
    ],
)
def test_the_subscriber_logs_and_skips_unknown_or_malformed_input(raw: bytes, caplog) -> None:
    got: list[events.Event] = []
    subscriber = Subscriber(Topology("redis://127.0.0.1:1"), got.append)
    with caplog.at_level(logging.WARNING, logger="notifier.realtime.subscriber"):
        subscriber._dispatch(raw)
        subscriber._dispatch(events.encode(LogoutEvent(user_id="u1")))
    assert got == [LogoutEvent(user_id="u1")]  # the next event still gets through
    assert "ignored a malformed event" in caplog.text


def test_unknown_fields_are_ignored_so_writers_can_add_some_first() -> None:
    raw = b'{"kind": "logout", "user_id": "u1", "reason": "later"}'
    assert events.decode(raw) == LogoutEvent(user_id="u1")


def without_timestamp(envelope: str) -> dict:
    message = json.loads(envelope)
    assert message.pop("timestamp").endswith("Z")
    return message


def test_the_writers_payloads_are_what_the_web_renderer_makes() -> None:
    web = Renderer()
    n = RENDERER.notification_event("u1", NOTIFICATION, 3)
    message = {"notification": NOTIFICATION, "unread_count": 3}
    assert n.payload("html") == web.notification(message, "html")
    assert without_timestamp(n.payload("json")) == without_timestamp(
        web.notification(message, "json")
    )
    assert 'id="notification-000000000007"' in n.html and "$2.49" in n.html
    assert "Milk &lt;2%&gt;" in n.html  # escaped once, by the writer

    r = RENDERER.read_event("u1", ["000000000001"], 1)
    read = {"ids": ["000000000001"], "unread_count": 1}
    assert r.payload("html") == web.read(read, "html")
    assert without_timestamp(r.payload("json")) == without_timestamp(web.read(read, "json"))
    assert without_timestamp(r.json)["data"] == read

    a = RENDERER.announcement_event(ANNOUNCEMENT)
    assert a.payload("html") == web.announcement({"announcement": ANNOUNCEMENT}, "html")
    assert without_timestamp(a.json) == {"type": "system-message", "data": ANNOUNCEMENT}


def test_a_page_includes_the_cores_row_as_the_socket_pushes_it() -> None:
    """The web renderer finds the core's fragments (package data of `notifier`) after its
    own templates, so a row looks the same whether it came with a page or live."""
    web = Renderer()
    pushed = RENDERER.render("fragments/notification_row.html", n=NOTIFICATION)
    page = web.env.from_string('{% include "fragments/notification_row.html" %}')
    assert page.render(n=NOTIFICATION) == pushed
    assert "$2.49" in pushed and "Milk &lt;2%&gt;" in pushed  # the core's filters, escaped


# Start-up checks of the private APIs the fast path uses ------------------------------------


class Shaped:
    """A stand-in with whatever attributes a test gives it."""

    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


def test_the_tornado_check_trips_when_iostream_loses_socket_or_writing() -> None:
    a, b = socket.socketpair()
    try:
        assert stream_problems(Shaped(socket=a, writing=lambda: False)) == []
        assert stream_problems(Shaped(fileno=a, writing=lambda: False)) == ["no `.socket`"]
        assert stream_problems(Shaped(socket=a)) == ["no `.writing()`"]
        assert stream_problems(Shaped(socket=a, writing=True)) == ["no `.writing()`"]
    finally:
        a.close()
        b.close()


def test_the_tornado_check_passes_on_the_pinned_tornado() -> None:
    async def check() -> None:
        assert iostream_problems() == []

    asyncio.run(check())
