"""The payloads pushed on sockets, rendered once by whoever writes the event.

A worker that publishes a notification (and a web process that publishes a read or an
announcement) renders both formats here and puts them in the bus event, so no web
process runs a template per message. The fragments it renders are the core's package
data (`notifier/realtime/templates/fragments/`); the web front end's pages include them
too (web/render.py searches its own templates, then these), so a row looks the same
whether it came with a page or live.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from notifier.formatting import money, relative_time
from notifier.kinds import TYPE_NAMES, NotificationType
from notifier.realtime import messages
from notifier.realtime.events import (
    AnnouncementEvent,
    JobProgressEvent,
    NotificationEvent,
    ReadEvent,
)

TEMPLATES = Path(__file__).with_name("templates")
FORMATS = ("html", "json")

# Which page event each notification type fires on `document` (the seed's event bus).
DOM_EVENTS = {
    NotificationType.DEAL: "notification:deal",
    NotificationType.SYSTEM: "notification:system",
    NotificationType.JOB: "notification:job",
}


def environment(templates: Sequence[Path] = (TEMPLATES,)) -> Environment:
    """The Jinja2 environment of pages and fragments, with its filters.

    `templates` are searched in order: the first folder holding a name wins.
    """
    env = Environment(
        loader=FileSystemLoader(templates),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["reltime"] = relative_time
    env.filters["path_segment"] = lambda s: urllib.parse.quote(str(s), safe="")
    env.globals["DOM_EVENTS"] = DOM_EVENTS
    env.globals["NotificationType"] = NotificationType
    env.globals["TYPE_NAMES"] = TYPE_NAMES
    return env


GREETINGS = 4096  # html greetings kept, one per unread count


class PayloadRenderer:
    """Renders fragments and the payloads pushed on sockets, and builds the bus events."""

    def __init__(self, templates: Sequence[Path] = (TEMPLATES,)) -> None:
        self.env = environment(templates)
        # The html greeting depends only on the unread count: rendered once per count (a
        # render is 30 µs, 3% of a handshake), a few thousand counts at most.
        self._greetings: dict[int, str] = {}

    def render(self, name: str, **context: Any) -> str:
        """Render a page or fragment template."""
        return self.env.get_template(name).render(**context)

    # Bus events, with both formats rendered (writers) ------------------------------------

    def notification_event(
        self, user_id: str, notification: Mapping[str, Any], unread: int
    ) -> NotificationEvent:
        """A stored notification (as the API shows it) as the event to publish."""
        message = {"notification": notification, "unread_count": unread}
        return NotificationEvent(
            html=self.notification(message, "html"),
            json=self.notification(message, "json"),
            user_id=user_id,
            seq=int(notification["id"]),
            type=notification["type"],
            created_at=datetime.fromisoformat(notification["created_at"]).timestamp(),
        )

    def read_event(self, user_id: str, ids: list[str], unread: int) -> ReadEvent:
        """Notifications marked read, as the event to publish."""
        message = {"ids": ids, "unread_count": unread}
        return ReadEvent(
            html=self.read(message, "html"),
            json=self.read(message, "json"),
            user_id=user_id,
            ids=ids,
        )

    def announcement_event(self, announcement: Mapping[str, Any]) -> AnnouncementEvent:
        """An announcement, as the event to publish."""
        message = {"announcement": announcement}
        return AnnouncementEvent(
            html=self.announcement(message, "html"),
            json=self.announcement(message, "json"),
            id=str(announcement["id"]),
            created_at=str(announcement["created_at"]),
        )

    def job_progress_event(
        self, user_id: str, job: str, job_id: str, done: int, total: int
    ) -> JobProgressEvent:
        """A job's progress, as the event to publish to the user who asked for the job."""
        message = {"job": job, "job_id": job_id, "done": done, "total": total}
        return JobProgressEvent(
            html=self.job_progress(message, "html"),
            json=self.job_progress(message, "json"),
            user_id=user_id,
            job_id=job_id,
        )

    # Socket payloads: each takes the format ("html" or "json") ----------------------------

    def notification(self, message: Mapping[str, Any], fmt: str) -> str:
        """A notification (`{"notification", "unread_count"}`): toast, row and badge, or JSON."""
        n, unread = message["notification"], message["unread_count"]
        if fmt == "json":
            data = {**n["data"], "id": n["id"], "created_at": n["created_at"]}
            envelope = messages.NOTIFICATION_ENVELOPES[n["type"]]
            return messages.encode(envelope(data={**data, "unread_count": unread}))
        return self.render("fragments/live_notification.html", n=n, unread_count=unread)

    def read(self, message: Mapping[str, Any], fmt: str) -> str:
        """Notifications marked read (`{"ids", "unread_count"}`), on any tab of this user."""
        ids, unread = message["ids"], message["unread_count"]
        if fmt == "json":
            return messages.encode(messages.NotificationRead(data=messages.ReadData(ids, unread)))
        return self.render("fragments/live_read.html", ids=ids, unread_count=unread)

    def announcement(self, message: Mapping[str, Any], fmt: str) -> str:
        """A system announcement for everybody (`{"announcement": {...}}`)."""
        a = message["announcement"]
        if fmt == "json":
            return messages.encode(messages.SystemMessage(data=a))
        return self.render("fragments/live_announcement.html", a=a)

    def job_progress(self, message: Mapping[str, Any], fmt: str) -> str:
        """`{"job", "job_id", "done", "total"}`: a progress bar in every tab of the requester."""
        if fmt == "json":
            return messages.encode(messages.JobProgress(data=messages.JobProgressData(**message)))
        return self.render("fragments/live_job_progress.html", **message)

    def unread(self, unread: int, fmt: str) -> str:
        """The authoritative unread count (after the live stream may have missed reads)."""
        if fmt == "json":
            return messages.encode(messages.UnreadCount(data=messages.UnreadData(unread)))
        return self.render("fragments/badge.html", unread_count=unread, oob=True)

    def behind(self, count: int, fmt: str) -> str:
        """After a replay that stopped short: `count` older notifications are in History."""
        message = f"{count} older notification(s) are in your history"
        if fmt == "json":
            data = messages.ErrorData("behind", message, count)
            return messages.encode(messages.Error(data=data))
        return self.render("fragments/live_behind.html", count=count)

    def connected(self, user: Mapping[str, Any], unread: int, fmt: str) -> str:
        """The first message on a socket: who you are and how many are unread."""
        if fmt == "json":
            data = messages.Connected(**user, unread_count=unread)
            return messages.encode(messages.ConnectionEstablished(data=data))
        greeting = self._greetings.get(unread)
        if greeting is None:
            if len(self._greetings) >= GREETINGS:
                self._greetings.clear()
            greeting = self.render("fragments/live_connected.html", unread_count=unread)
            self._greetings[unread] = greeting
        return greeting
