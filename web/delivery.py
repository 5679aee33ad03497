"""From the Redis bus to this process's sockets."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from notifier.notifications import parse_id
from notifier.registry import ConnectionRegistry
from web.handlers.ws import LOGGED_OUT, TOO_MANY_SOCKETS
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
            seq = parse_id(event["notification"]["id"])
            render = partial(self.renderer.notification, event)
            self.registry.offer_to_user(event["user_id"], seq, render)
        elif kind == "read":
            self.registry.send_to_user(event["user_id"], partial(self.renderer.read, event))
        elif kind == "announcement":
            self.registry.send_to_all(partial(self.renderer.announcement, event))
        elif kind == "logout":
            self.registry.close_user(event["user_id"], LOGGED_OUT, "logged out")
        elif kind == "evict":
            evicted = set(event["socket_ids"])
            for conn in self.registry.connections_for_user(event["user_id"]):
                if conn.socket_id in evicted:
                    conn.close(TOO_MANY_SOCKETS, "too many connections")
        else:
            log.warning("ignored an event of unknown kind %r", kind)

    async def resubscribed(self) -> None:
        """The bus was (re)joined: anything published meanwhile is filled from MongoDB."""
        self.registry.resync_all()
