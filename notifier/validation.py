"""Small, strict readers for JSON bodies: each raises InputError naming the field."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from notifier.errors import InputError

MAX_CENTS = 100_000_000  # a million dollars: anything above is a typo, not a grocery price


def body_object(body: object, fields: Collection[str]) -> dict[str, Any]:
    """The body must be a JSON object of no fields but `fields`: a misspelt one is an error."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are {', '.join(fields)}"
        )
    return body


NAME_LENGTH = 100  # usernames, item and store names
MESSAGE_LENGTH = 500  # announcements
TEXT_LENGTH = 200  # any other text field


def text(body: dict[str, Any], name: str, max_length: int = TEXT_LENGTH) -> str:
    """A required, non-blank string field, whitespace collapsed."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} is required and must be a non-empty string")
    value = " ".join(value.split())
    if len(value) > max_length:
        raise InputError(f"{name} must be at most {max_length} characters")
    return value


def cents(body: dict[str, Any], name: str, required: bool = True) -> int | None:
    """A whole number of cents, 0 to MAX_CENTS."""
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS:
        raise InputError(f"{name} must be a whole number of cents between 0 and {MAX_CENTS}")
    return value


def future_time(body: dict[str, Any], name: str) -> datetime | None:
    """An optional ISO 8601 time in the future, returned in UTC (naive input is UTC)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be an ISO 8601 date-time string")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{name} must be an ISO 8601 date-time string") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= datetime.now(UTC):
        raise InputError(f"{name} must be in the future")
    return when


def item_key(item_name: str) -> str:
    """The key two spellings of one item share: whitespace collapsed, case folded."""
    return " ".join(item_name.split()).casefold()
