"""A notification's public id: its seq, as a string that sorts in creation order."""

from __future__ import annotations

import re

from notifier.errors import InputError

_ID = re.compile(r"[0-9]{12}")  # fullmatch: "$" would allow a trailing newline


def format_id(seq: int) -> str:
    """The public id of a user's seq-th notification: a string that sorts in creation order."""
    return f"{seq:012d}"


def parse_id(value: object, name: str = "id") -> int:
    """The seq behind a public id; InputError when it is not one of ours."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InputError(f"{name} must be a notification id")
    return int(value)
