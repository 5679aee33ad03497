"""The one error vocabulary of the core: a code, a one-line message and the HTTP status.

The web layer turns any NotifierError into the contract's JSON error (or a page with a
message); the CLI prints its message. Nothing was changed when one is raised.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Something asked of notifier cannot be done; nothing was changed."""

    status = 400
    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InputError(NotifierError, ValueError):
    """Input that cannot be accepted."""

    code = "invalid_input"


class NotFound(InputError):
    """The thing asked for does not exist (for this user)."""

    status = 404
    code = "not_found"


class InvalidToken(NotifierError):
    """The token is missing, malformed, expired or not signed by us."""

    status = 401
    code = "unauthorized"


class InvalidLink(InputError):
    """A signed link (unsubscribe) that is malformed or not signed by us."""

    code = "invalid_link"


class TooManyAttempts(NotifierError):
    """Too many failed logins; `retry_after` seconds until the next try is allowed."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class ConfigurationError(NotifierError):
    """The environment does not describe a runnable service; the message is one line."""

    status = 500
    code = "configuration"


class ServerError(NotifierError):
    """An embedded development server did not start."""

    status = 503
    code = "unavailable"


class CommandFailed(NotifierError):
    """A command-line command could not do its job; the message says why in one line."""

    code = "failed"
