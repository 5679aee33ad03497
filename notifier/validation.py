"""Small, strict readers for JSON bodies: each raises InputError naming the field."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from notifier.errors import InputError

MAX_CENTS = 100_000_000  # a million dollars: anything above is a typo, not a grocery price
NAME_LENGTH = 100  # usernames, item and store names
PASSWORD_LENGTH = 1024  # scrypt runs on the whole password: a megabyte of it is a CPU attack
MESSAGE_LENGTH = 500  # announcements
TEXT_LENGTH = 200  # any other text field
_ASCII_NUMBER = re.compile(r"[0-9]{1,9}")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
# Never in a name: C0 controls but tab, LF and CR (whitespace, collapsed to a space), DEL,
# C1 controls, and the bidi embeddings, overrides and isolates that can make a name read as
# something else ("\u202e" turns "gpj.exe" around). Marks (LRM, RLM) stay: RTL names need them.
_NOT_IN_NAMES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Browsers drop tabs and newlines from URLs and read "\" as "/", so "/\t/evil" is "//evil".
_UNSAFE_IN_PATH = re.compile(r"[\x00-\x1f\x7f\\]")


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


def text(body: dict[str, Any], name: str, max_length: int = TEXT_LENGTH) -> str:
    """A required, non-blank string field, whitespace collapsed."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} is required and must be a non-empty string")
    if len(value) > 4 * max_length:  # bounded before any work is done on it
        raise InputError(f"{name} must be at most {max_length} characters")
    value = " ".join(value.split())
    if len(value) > max_length:
        raise InputError(f"{name} must be at most {max_length} characters")
    return storable(value, name)


def name(body: dict[str, Any], field: str, max_length: int = NAME_LENGTH) -> str:
    """An item, store or user name, by the one rule every entry applies (issue 23 #1).

    Names become alert text, email subjects, page titles and keys: no control characters
    (C0 but whitespace, DEL, C1), no bidi embeddings, overrides or isolates, valid Unicode,
    NFC-normalised (so "é" typed two ways is one item), whitespace collapsed and trimmed.
    Refused with a message naming the field and the first bad character, never cleaned
    silently: what is stored is what the person sees.
    """
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field} is required and must be a non-empty string")
    if len(value) > 4 * max_length:  # bounded before any work is done on it
        raise InputError(f"{field} must be at most {max_length} characters")
    storable(value, field)
    return clean_name(value, field, max_length)


def clean_name(value: str, field: str, max_length: int = NAME_LENGTH) -> str:
    """The name rule on a string already bounded; InputError naming the first bad character."""
    value = unicodedata.normalize("NFC", value)
    bad = _NOT_IN_NAMES.search(value)
    if bad:
        kind = "a bidi control" if bad.group() >= "\u202a" else "a control character"
        raise InputError(
            f"{field} must not contain {kind} (U+{ord(bad.group()):04X} at {bad.start() + 1})"
        )
    value = " ".join(value.split())
    if not value:
        raise InputError(f"{field} is required and must be a non-empty string")
    if len(value) > max_length:
        raise InputError(f"{field} must be at most {max_length} characters")
    return value


def printable(value: str) -> str:
    """Text for a header line (an email Subject) with no control or bidi characters.

    For text stored before the name rule: each such character becomes a space.
    """
    return " ".join(_NOT_IN_NAMES.sub(" ", value).split())


def storable(value: str, name: str) -> str:
    """The string, if it can be stored: a lone surrogate ("\\ud800") has no UTF-8 form."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{name} must be valid Unicode text") from None
    return value


def whole_number(raw: str, name: str, low: int, high: int) -> int:
    """ASCII digits only ("²" and other scripts' digits are refused), from low to high."""
    if not _ASCII_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def email_address(value: str) -> str:
    """A plain address (no display name, no CR/LF or other control characters)."""
    if len(value) > 320 or not _EMAIL.fullmatch(value):
        raise InputError(f"{value[:100]!r} is not an email address")
    return value


def safe_path(target: str | None, default: str = "/") -> str:
    """A redirect target on this site, as a browser will read it; else `default`.

    Only a path: no scheme, no host, no control characters or backslashes (which a
    browser strips or turns into "/", making "/\\evil" or "/\\t/evil" another site).
    """
    if (
        not target
        or len(target) > 2000
        or not target.startswith("/")
        or target.startswith("//")
        or _UNSAFE_IN_PATH.search(target)
    ):
        return default
    return target


def cents(body: dict[str, Any], name: str, required: bool = True) -> int | None:
    """A whole number of cents, 0 to MAX_CENTS."""
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS:
        raise InputError(f"{name} must be a whole number of cents between 0 and {MAX_CENTS}")
    return value


def optional_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """An optional whole number from low to high (null or absent: None)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, or null")
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
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):  # 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise InputError(f"{name} must be an ISO 8601 date-time string") from None
    if when <= datetime.now(UTC):
        raise InputError(f"{name} must be in the future")
    return when


def item_key(item_name: str) -> str:
    """The key two spellings of one item share: whitespace collapsed, case folded, NFC."""
    return unicodedata.normalize("NFC", " ".join(item_name.split()).casefold())
