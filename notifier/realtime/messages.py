"""WebSocket message envelopes (the `json` format): {"type", "data", "timestamp"}."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from notifier.formatting import iso

# One encoder for every envelope: json.dumps with non-default options builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))

TYPES = (
    "connection-established",
    "deal-notification",
    "system-message",
    "job-complete",
    "notification-read",
    "unread-count",
    "job-progress",
    "ping",
    "pong",
    "error",
)


def envelope(type: str, data: dict[str, Any]) -> str:
    """One envelope as the JSON text sent on the socket."""
    assert type in TYPES
    return _COMPACT.encode({"type": type, "data": data, "timestamp": iso(datetime.now(UTC))})


def error(code: str, message: str) -> str:
    """An `error` envelope."""
    return envelope("error", {"code": code, "message": message})
