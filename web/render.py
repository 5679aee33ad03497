"""Jinja2 pages and fragments; a fragment looks the same whether it came with a page or live.

The environment, its filters and the socket payloads are the core's
(notifier/realtime/render.py): the workers render the live payloads with the same
templates, so a web process only renders pages and per-socket messages here.
"""

from __future__ import annotations

from notifier.realtime.render import TEMPLATES, PayloadRenderer


class Renderer(PayloadRenderer):
    """Renders pages, fragments and the payloads pushed on sockets."""


__all__ = ["TEMPLATES", "Renderer"]
