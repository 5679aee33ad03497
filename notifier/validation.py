"""What a request's shape cannot say, and the one way a body becomes its Struct.

Shapes are msgspec Structs next to what they describe (a Struct's type and `Meta` limits
are also its OpenAPI schema, web/openapi.py). `decode` reads a parsed JSON body into one
and turns msgspec's complaint into the InputError naming the field; the functions below
are the rules a type cannot carry: collapsed whitespace, text with a UTF-8 form, a time
in the future, a safe redirect.
"""

from __future__ import annotations

import re
import types
import typing
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import msgspec

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
_NOT_IN_NAMES_CLASS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_NOT_IN_NAMES = re.compile(f"[{_NOT_IN_NAMES_CLASS}]")
# The same rule as a JSON Schema pattern: none of those, and something not blank.
NAME_PATTERN = rf"^[^{_NOT_IN_NAMES_CLASS}]*[^\s{_NOT_IN_NAMES_CLASS}][^{_NOT_IN_NAMES_CLASS}]*$"
# Browsers drop tabs and newlines from URLs and read "\" as "/", so "/\t/evil" is "//evil".
_UNSAFE_IN_PATH = re.compile(r"[\x00-\x1f\x7f\\]")

S = TypeVar("S", bound=msgspec.Struct)


def must(sentence: str, code: str | None = None, **limits: Any) -> msgspec.Meta:
    """`Meta` limits with the sentence an error gives after the field's name (and its
    code, when it is not invalid_input)."""
    return msgspec.Meta(**limits, extra={"must": sentence, "code": code})


def text_meta(max_length: int, **more: Any) -> msgspec.Meta:
    """A non-blank string of at most `max_length` once whitespace is collapsed (`text`).

    The schema says so; msgspec checks only that it is a string, since the length counts
    after collapsing (a pasted name with double spaces is still a good name).
    """
    limits = {"minLength": 1, "maxLength": max_length, "pattern": r"\S"}
    return must("is required and must be a non-empty string", extra_json_schema=limits, **more)


CENTS = must(f"must be a whole number of cents between 0 and {MAX_CENTS}", ge=0, le=MAX_CENTS)
Cents = Annotated[int, CENTS]
Text100 = Annotated[str, text_meta(NAME_LENGTH)]
Name = Annotated[
    str,
    must(
        "is required and must be a non-empty string",
        extra_json_schema={"minLength": 1, "maxLength": NAME_LENGTH, "pattern": NAME_PATTERN},
        description="no control characters (C0 but tab and line breaks, DEL, C1) and no bidi "
        "embeddings, overrides or isolates; stored NFC-normalised, whitespace collapsed",
    ),
]
NOTIFICATION_ID = r"^[0-9]{12}$"
NotificationId = Annotated[
    str, must("must be a notification id", pattern=NOTIFICATION_ID, description="a notification id")
]


def decode(shape: type[S], body: object) -> S:
    """`body` (parsed JSON) as `shape`, or InputError naming the field that is wrong."""
    try:
        return msgspec.convert(body, shape)
    except msgspec.ValidationError as e:
        raise InputError(*explain(shape, str(e))) from None
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") where msgspec needs UTF-8
        raise InputError("the body must be valid Unicode text") from None


_WHERE = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)


def explain(shape: type[msgspec.Struct], error: str) -> tuple[str, str | None]:
    """msgspec's complaint in the words the readers always used: "<field> must be ...",
    and the field's own error code if it has one."""
    where = _WHERE.fullmatch(error)
    assert where is not None
    what, path = where["what"], where["path"] or ""
    fields = [f for f in re.split(r"[.\[]", path) if f and not f.endswith("]")]
    if missing := re.fullmatch(r"Object missing required field `(.+)`", what):
        fields.append(missing[1])
    elif unknown := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        names = ", ".join(_struct_at(shape, fields).__struct_fields__)
        return f"unknown field(s) {unknown[1]!r}; the fields are {names}", None
    elif not fields and what.startswith("Expected `object`"):
        return "the body must be a JSON object", None
    if not fields:
        return what, None
    owner = _struct_at(shape, fields[:-1])
    meta, _ = _meta(typing.get_type_hints(owner, include_extras=True).get(fields[-1]))
    extra = meta.extra if meta is not None and meta.extra else {}
    return f"{'.'.join(fields)} {extra.get('must') or 'is not valid: ' + what}", extra.get("code")


def _struct_at(shape: type[msgspec.Struct], fields: list[str]) -> type[msgspec.Struct]:
    """The Struct a path of fields leads to (`keys` of a push subscription, say)."""
    for name in fields:
        _, inner = _meta(typing.get_type_hints(shape, include_extras=True).get(name))
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            shape = inner
    return shape


def _meta(hint: object) -> tuple[msgspec.Meta | None, object]:
    """The Meta with an error sentence on a field's type (looking through `X | None` and
    descriptions), and the type it is on."""
    if typing.get_origin(hint) is Annotated:
        inner = typing.get_args(hint)[0]
        metas = [m for m in hint.__metadata__ if isinstance(m, msgspec.Meta) and m.extra]  # type: ignore[attr-defined]
        return (metas[0], inner) if metas else _meta(inner)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [_meta(option) for option in typing.get_args(hint)]
        for meta, inner in found:
            if meta is not None:
                return meta, inner
        structs = [i for _, i in found if isinstance(i, type) and issubclass(i, msgspec.Struct)]
        return None, (structs[0] if structs else hint)
    return None, hint


def text(value: object, name: str, max_length: int = TEXT_LENGTH) -> str:
    """A required, non-blank string, whitespace collapsed."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} is required and must be a non-empty string")
    if len(value) > 4 * max_length:  # bounded before any work is done on it
        raise InputError(f"{name} must be at most {max_length} characters")
    value = " ".join(value.split())
    if len(value) > max_length:
        raise InputError(f"{name} must be at most {max_length} characters")
    return storable(value, name)


def name(value: object, field: str, max_length: int = NAME_LENGTH) -> str:
    """An item, store or user name, by the one rule every entry applies (issue 23 #1).

    Names become alert text, email subjects, page titles and keys: no control characters
    (C0 but whitespace, DEL, C1), no bidi embeddings, overrides or isolates, valid Unicode,
    NFC-normalised (so "é" typed two ways is one item), whitespace collapsed and trimmed.
    Refused with a message naming the field and the first bad character, never cleaned
    silently: what is stored is what the person sees.
    """
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field} is required and must be a non-empty string")
    # Counted as sent, as the schema's maxLength counts (before trimming), and before any
    # work is done on it.
    if len(value) > max_length:
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


def future_time(value: object, name: str) -> datetime | None:
    """An optional ISO 8601 time in the future, returned in UTC (naive input is UTC)."""
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
