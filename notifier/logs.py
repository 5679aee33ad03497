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
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
USER_ID: ContextVar[str | None] = ContextVar("user_id", default=None)

_SECRET_PARAMS = re.compile(r"([?&](?:token|access_token|password)=)[^&\s\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
READABLE = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """The text with token-like query values and bearer tokens replaced."""
    return _BEARER.sub(r"\1[redacted]", _SECRET_PARAMS.sub(r"\1[redacted]", text))


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
