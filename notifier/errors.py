"""The one error vocabulary: a code, a one-line message, the HTTP status and its headers.

Handlers raise these; `error_body` renders one as every JSON client sees it, a page shows
its message, a socket sends its code and message in an `error` frame, and the CLI prints
the message. Nothing was changed when one is raised. How a socket is closed is named the
same way, once, in notifier/realtime/disconnect.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import msgspec

RETRY_AFTER_OUTAGE = 5  # seconds: MongoDB or Redis is usually back by then


class NotifierError(Exception):
    """Something asked of notifier cannot be done; nothing was changed."""

    status = 400
    code = "error"

    def __init__(
        self, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # What the HTTP answer carries besides the body (WWW-Authenticate, HX-Redirect...).
        self.headers = dict(headers or {})


class InputError(NotifierError, ValueError):
    """Input that cannot be accepted."""

    code = "invalid_input"


class NotFound(InputError):
    """The thing asked for does not exist (for this user)."""

    status = 404
    code = "not_found"


class InvalidLink(InputError):
    """A signed link (unsubscribe) that is malformed or not signed by us."""

    code = "invalid_link"


class TooLarge(InputError):
    """A request body over the limit (answered before the handler sees it)."""

    status = 413
    code = "too_large"


class Unauthorized(NotifierError):
    """No valid credentials: no token, a bad one, or a wrong password."""

    status = 401
    code = "unauthorized"


class InvalidToken(Unauthorized):
    """The token is missing, malformed, expired or not signed by us."""


class Forbidden(NotifierError):
    """Valid credentials without the right to this (an admin's page, say)."""

    status = 403
    code = "forbidden"


class RateLimited(NotifierError):
    """Too many of something; `retry_after` seconds until the next try is allowed."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class TooManyAttempts(RateLimited):
    """Too many failed logins."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s", retry_after)


class Unavailable(NotifierError):
    """MongoDB, Redis or the task queue cannot be reached: try again shortly."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code, {"Retry-After": str(RETRY_AFTER_OUTAGE)})


class ServerError(Unavailable):
    """An embedded development server did not start."""


class ConfigurationError(NotifierError):
    """The environment does not describe a runnable service; the message is one line."""

    status = 500
    code = "configuration"


class CommandFailed(NotifierError):
    """A command-line command could not do its job; the message says why in one line."""

    code = "failed"


class ErrorDetail(msgspec.Struct):
    """What went wrong: a machine-readable code and a one-line message."""

    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """The contract's JSON error: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorDetail


def error_body(error: NotifierError) -> str:
    """The contract's JSON error for `error`, as sent (json.dumps: a lone surrogate in a
    message is escaped, never an encoding error)."""
    return json.dumps(msgspec.to_builtins(ErrorBody(ErrorDetail(error.code, error.message))))
