"""Log lines: one JSON object each in production, readable text in development; never a secret.

Every line carries the request id and the user id where they are known: web handlers
set them in context variables, which asyncio copies into the tasks a request starts.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import urllib.parse
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
USER_ID: ContextVar[str | None] = ContextVar("user_id", default=None)

SECRET_NAMES = frozenset({"token", "access_token", "password"})
# A query parameter in a URL: its name and its value, both possibly percent-encoded.
_PARAM = re.compile(r"([?&;])([^=&;\s\"'#?]*)=([^&;\s\"'#]*)")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=%-]+")
# A JWT anywhere (header.payload.signature, the header always starts "eyJ").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
READABLE = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """The text with secret query values, bearer tokens and anything like a JWT replaced.

    Names and values are judged after percent-decoding (`%74oken=` is `token=`), and a
    value that decodes to a URL carrying a secret (`next=/x%3Ftoken%3D...`) goes too.
    """
    return _JWT.sub(REDACTED, _BEARER.sub(r"\1" + REDACTED, _PARAM.sub(_redact_param, text)))


def _redact_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if _decoded(name).strip().lower() in SECRET_NAMES:
        return f"{sep}{name}={REDACTED}"
    decoded = _decoded(value)
    if decoded != value and redact(decoded) != decoded:
        return f"{sep}{name}={REDACTED}"
    return match.group(0)


def _decoded(text: str, rounds: int = 3) -> str:
    """Percent-decoded until it stops changing (double encoding included), a few rounds."""
    for _ in range(rounds):
        plain = urllib.parse.unquote_plus(text)
        if plain == text:
            break
        text = plain
    return text


class ContextFilter(logging.Filter):
    """Adds request_id and user_id (from the context, unless given as `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "user_id", None) is None:
            record.user_id = USER_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, user_id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a line of JSON, secrets redacted."""
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("request_id", "user_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class ReadableFormatter(logging.Formatter):
    """Tornado-like text lines, with the request id when there is one, secrets redacted."""

    def __init__(self) -> None:
        super().__init__(READABLE)

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [request {request_id}]"
        return redact(line)


def configure(production: bool, level: int = logging.INFO) -> None:
    """Send every log record to stderr in this process's format (replacing other handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if production else ReadableFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
