"""Errors the core raises for bad input; the web layer turns them into 4xx JSON."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be accepted; nothing was changed."""

    status = 400

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(InputError):
    """The thing asked for does not exist (for this user)."""

    status = 404

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_found")
