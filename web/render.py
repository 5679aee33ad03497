"""Jinja2 pages and fragments; a fragment looks the same whether it came with a page or live.

The environment, its filters and the socket payloads are the core's
(notifier/realtime/render.py): the workers render the live payloads with the same
templates, so a web process only renders pages and per-socket messages here. Pages and
the fragments only pages use are this package's data (`web/templates/`); a name not
found there is looked up in the core's templates (the live fragments and what they
include), so a page includes `fragments/notification_row.html` wherever it lives.
"""

from __future__ import annotations

from pathlib import Path

from notifier.realtime import render

TEMPLATES = Path(__file__).with_name("templates")


class Renderer(render.PayloadRenderer):
    """Renders pages, fragments and the payloads pushed on sockets."""

    def __init__(self) -> None:
        super().__init__((TEMPLATES, render.TEMPLATES))


__all__ = ["TEMPLATES", "Renderer"]
