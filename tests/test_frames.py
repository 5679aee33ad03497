"""The fan-out fast path: a message is framed once and every socket gets the right bytes."""

from __future__ import annotations

import socket
import struct

import pytest

from notifier.notifications.store import format_id
from notifier.realtime import bus
from notifier.realtime.events import NotificationEvent
from tests.helpers import RENDERER, one_loop_turn, raw_ws_open, tick_until_dropped
from web.frames import text_frame


def parse_frame(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of an unmasked server frame; the length must match exactly."""
    first, second = frame[0], frame[1]
    assert not second & 0x80, "server frames are never masked"
    n, at = second & 0x7F, 2
    if n == 126:
        (n,), at = struct.unpack("!H", frame[2:4]), 4
    elif n == 127:
        (n,), at = struct.unpack("!Q", frame[2:10]), 10
    assert len(frame) == at + n
    return first, frame[at:]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_carries_its_payload_with_the_shortest_length_header(size):
    payload = ("é" + "x" * size)[:size] if size else ""
    frame = text_frame(payload)
    first, data = parse_frame(frame)
    assert first == 0x81 and data == payload.encode()
    n = len(payload.encode())
    assert len(frame) - n == (2 if n < 126 else 4 if n < 65536 else 10)


def notification_event(user_id: str, seq: int) -> NotificationEvent:
    n = {
        "id": format_id(seq),
        "type": "system-message",
        "created_at": "2026-01-01T00:00:00.000Z",
        "read": False,
        "data": {"message": f"number {seq}", "severity": "info"},
    }
    return RENDERER.notification_event(user_id, n, seq)


@pytest.mark.gen_test(timeout=60)
async def test_a_fan_out_frames_each_format_once_and_every_socket_gets_its_format(
    ws_connect, sync_redis, alice
):
    as_json = [await ws_connect(f"?format=json&token={alice.token}") for _ in range(3)]
    as_html = [await ws_connect(f"?format=html&token={alice.token}") for _ in range(3)]
    for sock in as_html:
        assert "unread-badge" in await sock.recv()  # the greeting
    text_frame.cache_clear()

    sync_redis.publish(
        bus.user_channel(alice.user_id), bus.encode(notification_event(alice.user_id, 1))
    )
    envelopes = [await sock.recv_json() for sock in as_json]
    fragments = [await sock.recv() for sock in as_html]

    assert text_frame.cache_info().misses == 2  # one html frame, one json frame
    assert all(e == envelopes[0] for e in envelopes)
    assert envelopes[0]["type"] == "system-message"
    assert envelopes[0]["data"]["message"] == "number 1"
    assert envelopes[0]["data"]["id"] == format_id(1)
    assert all(f == fragments[0] for f in fragments)
    assert f'id="notification-{format_id(1)}"' in fragments[0] and "number 1" in fragments[0]


@pytest.mark.gen_test(timeout=60)
async def test_a_socket_reset_by_its_client_is_dropped_and_the_others_still_get_everything(
    app, http_port, ws_connect, sync_redis, alice, bob
):
    healthy = await ws_connect(f"?format=json&token={bob.token}")
    _, writer = await raw_ws_open(http_port, alice.token)
    registry = app.settings["registry"]
    while not registry.connections_for_user(alice.user_id):
        await one_loop_turn()
    # Close with a reset (linger 0), so the server's next write fails outright.
    raw = writer.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

    await tick_until_dropped(registry, sync_redis, alice.user_id, healthy, 1000)
    assert registry.stats()["connections"] == 1
