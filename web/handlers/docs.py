"""GET /api/openapi.json: the JSON API described (web/openapi.py)."""

from __future__ import annotations

import json

from web.handlers.base import BaseHandler
from web.openapi import DOCUMENT

ENCODED = json.dumps(DOCUMENT, separators=(",", ":"))


class OpenApiHandler(BaseHandler):
    """The OpenAPI 3.1 document; public, like any API's description."""

    def get(self) -> None:
        """The document, encoded once."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(ENCODED)


default_handlers = [(r"/api/openapi.json", OpenApiHandler)]
