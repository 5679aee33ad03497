"""The fan-out: from the bus to this process's sockets, one place for every kind of event.

Each event arrives decoded and typed (notifier.realtime.events) with its payloads already
rendered by the writer; the fan-out hands them to the registry, which offers them to the
user's OrderedDelivery sockets. Like the registry, it runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import assert_never

from notifier import metrics
from notifier.kinds import NotificationType
from notifier.notifications.announcements import LatestAnnouncement
from notifier.realtime.disconnect import LOGGED_OUT, TOO_MANY_SOCKETS
from notifier.realtime.events import (
    AnnouncementEvent,
    Event,
    EvictEvent,
    JobProgressEvent,
    LogoutEvent,
    NotificationEvent,
    ReadEvent,
)
from notifier.realtime.registry import ConnectionRegistry

# Metrics are written at most this often (and at once before a scrape of this process):
# with WEB_CONCURRENCY > 1 each write is a lock, a getpid() and an mmap write per value,
# which per read from the bus cost a process of 4 about 7 us per delivery.
METRICS_EVERY = 0.5  # seconds


class FanOut:
    """Hands each bus event's ready-made payloads to the registry; no template runs here.

    Runs on the IOLoop (called by the subscriber task), like the registry it feeds.
    Metrics are counted per event and written every METRICS_EVERY seconds while there are
    deliveries (`flush` after each read from the bus; `write_metrics` before a scrape).
    """

    def __init__(self, registry: ConnectionRegistry, latest: LatestAnnouncement) -> None:
        self.registry = registry
        self.latest = latest  # the newest announcement known: what /ws connects check
        self._delivered: Counter[str] = Counter()  # message type -> sockets, this window
        self._oldest: float | None = None  # the oldest notification delivered, this batch
        self._slowest: float | None = None  # the most a batch's oldest was late, this window
        self._window: asyncio.TimerHandle | None = None  # when this window's metrics go out

    def __call__(self, event: Event) -> None:
        """Deliver one event from the bus (the decoder already refused unknown kinds)."""
        match event:
            case NotificationEvent():
                self.notification(event)
            case ReadEvent():
                self.read(event)
            case AnnouncementEvent():
                self.announcement(event)
            case JobProgressEvent():
                self.job_progress(event)
            case LogoutEvent():
                self.logout(event)
            case EvictEvent():
                self.evict(event)
            case _:
                assert_never(event)

    def notification(self, event: NotificationEvent) -> None:
        """A new notification, offered to each of the user's sockets in seq order."""
        sockets = self.registry.offer_to_user(event.user_id, event.seq, event.payload)
        if sockets:
            self._delivered[event.type] += sockets
            if self._oldest is None or event.created_at < self._oldest:
                self._oldest = event.created_at

    def read(self, event: ReadEvent) -> None:
        """Notifications marked read, on every socket of the user."""
        self._delivered["notification-read"] += self.registry.send_to_user(
            event.user_id, event.payload
        )

    def announcement(self, event: AnnouncementEvent) -> None:
        """An announcement, on every socket of this process."""
        self.latest.saw({"created_at": event.created_at})
        self._delivered[NotificationType.SYSTEM] += self.registry.send_to_all(event.payload)

    def job_progress(self, event: JobProgressEvent) -> None:
        """How far the user's job has got, on every socket of theirs."""
        self._delivered["job-progress"] += self.registry.send_to_user(event.user_id, event.payload)

    def logout(self, event: LogoutEvent) -> None:
        """The user logged out: close their sockets here."""
        self.registry.close_user(event.user_id, *LOGGED_OUT)

    def evict(self, event: EvictEvent) -> None:
        """Close those of the user's sockets over the limit that live here."""
        self.registry.close_sockets(event.user_id, set(event.socket_ids), *TOO_MANY_SOCKETS)

    def flush(self) -> None:
        """A read from the bus was delivered: note how late it was, and make sure the
        window's metrics will be written."""
        if self._oldest is not None:
            late = max(0.0, time.time() - self._oldest)
            self._slowest = late if self._slowest is None else max(self._slowest, late)
            self._oldest = None
        if self._window is None and (self._delivered or self._slowest is not None):
            self._window = asyncio.get_running_loop().call_later(METRICS_EVERY, self.write_metrics)

    def write_metrics(self) -> None:
        """Write the window's deliveries, and one latency: the slowest of its reads from the
        bus (how late each read's oldest notification was, at its delivery)."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        for message_type, sockets in self._delivered.items():
            metrics.delivered(message_type).inc(sockets)
        self._delivered.clear()
        if self._slowest is not None:
            metrics.DELIVERY_LATENCY.observe(self._slowest)
            self._slowest = None

    async def resubscribed(self) -> None:
        """The bus was (re)joined: anything published meanwhile is filled from MongoDB."""
        self.latest.forget()  # an announcement event may have been lost too
        self.registry.resync_all()
