"""From the Redis bus to this process's sockets."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from notifier.registry import ConnectionRegistry
from web.handlers.ws import LOGGED_OUT
from web.render import Renderer

log = logging.getLogger(__name__)


class Delivery:
    """Hands each bus event to the registry, rendered once per format.

    Runs on the IOLoop (called by the subscriber task), like the registry it feeds.
    """

    def __init__(self, registry: ConnectionRegistry, renderer: Renderer) -> None:
        self.registry = registry
        self.renderer = renderer

    def __call__(self, event: dict[str, Any]) -> None:
        """Deliver one event from the bus."""
        kind = event["kind"]
        if kind == "notification":
            self.registry.send_to_user(event["user_id"], partial(self.renderer.notification, event))
        elif kind == "read":
            self.registry.send_to_user(event["user_id"], partial(self.renderer.read, event))
        elif kind == "announcement":
            self.registry.send_to_all(partial(self.renderer.announcement, event))
        elif kind == "logout":
            self.registry.close_user(event["user_id"], LOGGED_OUT, "logged out")
        else:
            log.warning("ignored an event of unknown kind %r", kind)
