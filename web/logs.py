"""Access logs without secrets: the `?token=` of a WebSocket URL never reaches a log line."""

from __future__ import annotations

import logging
import re

from tornado.web import RequestHandler

access_log = logging.getLogger("tornado.access")
_SECRET_PARAMS = re.compile(r"([?&](?:token|access_token|password)=)[^&]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """The URI with token-like query values replaced."""
    return _SECRET_PARAMS.sub(r"\1[redacted]", uri)


def log_request(handler: RequestHandler) -> None:
    """One access-log line per request, like Tornado's, minus secrets."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    r = handler.request
    access_log.log(level, "%d %s %s (%s) %.2fms", status, r.method, redact(r.uri or ""),
                   r.remote_ip, 1000.0 * r.request_time())  # fmt: skip
