"""Static files with the security headers, and a 404 (not a 500) for impossible paths."""

from __future__ import annotations

import re
from pathlib import Path

from tornado.web import HTTPError, StaticFileHandler

from web.handlers.base import security_headers

# A NUL makes os.path raise ValueError ("embedded null byte"); no file of ours has a
# control character or backslash in its name.
_IMPOSSIBLE = re.compile(r"[\x00-\x1f\x7f\\]")
# The page's CSS, scripts and icons: package data of `web`, so they install with it.
STATIC = Path(__file__).resolve().parent.parent / "static"


class NotifierStaticFileHandler(StaticFileHandler):
    """Tornado's static file handler, hardened."""

    def set_default_headers(self) -> None:
        """nosniff and the rest, as on every answer."""
        security_headers(self)

    def parse_url_path(self, url_path: str) -> str:
        """Refuse `/static/app.js%00.css` and the like before the file system sees them."""
        if _IMPOSSIBLE.search(url_path):
            raise HTTPError(404)
        return super().parse_url_path(url_path)
