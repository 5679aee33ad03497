"""From the Redis bus to this process's sockets."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from notifier import metrics
from notifier.notifications.announcements import LatestAnnouncement
from notifier.notifications.store import parse_id
from notifier.realtime.delivery import LOGGED_OUT, TOO_MANY_SOCKETS
from notifier.realtime.registry import ConnectionRegistry
from web.render import Renderer

log = logging.getLogger(__name__)


class Delivery:
    """Hands each bus event to the registry, rendered once per format.

    Runs on the IOLoop (called by the subscriber task), like the registry it feeds.
    """

    def __init__(
        self, registry: ConnectionRegistry, renderer: Renderer, latest: LatestAnnouncement
    ) -> None:
        self.registry = registry
        self.renderer = renderer
        self.latest = latest  # the app's settings["announcements"]: what /ws connects check

    def __call__(self, event: dict[str, Any]) -> None:
        """Deliver one event from the bus."""
        kind = event["kind"]
        if kind == "notification":
            notification = event["notification"]
            seq = parse_id(notification["id"])
            render = partial(self.renderer.notification, event)
            sockets = self.registry.offer_to_user(event["user_id"], seq, render)
            # Once per fan-out, not per socket: the hot path stays a loop of writes.
            if sockets:
                metrics.delivered(notification["type"]).inc(sockets)
                latency = metrics.seconds_since(notification["created_at"])
                if latency is not None:
                    metrics.DELIVERY_LATENCY.observe(latency)
        elif kind == "read":
            sent = self.registry.send_to_user(event["user_id"], partial(self.renderer.read, event))
            metrics.delivered("notification-read").inc(sent)
        elif kind == "announcement":
            self.latest.saw(event["announcement"])
            sent = self.registry.send_to_all(partial(self.renderer.announcement, event))
            metrics.delivered("system-message").inc(sent)
        elif kind == "logout":
            self.registry.close_user(event["user_id"], LOGGED_OUT, "logged out")
        elif kind == "evict":
            self.registry.close_sockets(
                event["user_id"], set(event["socket_ids"]), TOO_MANY_SOCKETS, "too many connections"
            )
        else:
            log.warning("ignored an event of unknown kind %r", kind)

    async def resubscribed(self) -> None:
        """The bus was (re)joined: anything published meanwhile is filled from MongoDB."""
        self.latest.forget()  # an announcement event may have been lost too
        self.registry.resync_all()
