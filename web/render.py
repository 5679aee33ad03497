"""Jinja2 pages and fragments; a fragment looks the same whether it came with a page or live."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from notifier.realtime import messages

TEMPLATES = Path(__file__).with_name("templates")

# Which page event each notification type fires on `document` (the seed's event bus).
DOM_EVENTS = {
    "deal-notification": "notification:deal",
    "system-message": "notification:system",
    "job-complete": "notification:job",
}


def money(cents: int | None) -> str:
    """Cents as dollars: 1299 -> "$12.99"."""
    if cents is None:
        return ""
    return f"${cents // 100:,}.{cents % 100:02d}"


def parse_time(value: str) -> datetime:
    """An ISO time from a notification back into a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def relative_time(value: str, now: datetime | None = None) -> str:
    """ "just now", "5 minutes ago", "3 hours ago", "2 days ago"."""
    seconds = ((now or datetime.now(UTC)) - parse_time(value)).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return "just now"


class Renderer:
    """Renders pages, fragments and the payloads pushed on sockets."""

    def __init__(self, templates: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["money"] = money
        self.env.filters["reltime"] = relative_time
        self.env.filters["path_segment"] = lambda s: urllib.parse.quote(str(s), safe="")
        self.env.globals["DOM_EVENTS"] = DOM_EVENTS

    def render(self, name: str, **context: Any) -> str:
        """Render a page or fragment template."""
        return self.env.get_template(name).render(**context)

    # Socket payloads: each takes the format ("html" or "json") --------------------------------

    def notification(self, event: dict[str, Any], fmt: str) -> str:
        """A new notification: toast, row and badge (html), or its envelope (json)."""
        n, unread = event["notification"], event["unread_count"]
        if fmt == "json":
            data = {**n["data"], "id": n["id"], "created_at": n["created_at"]}
            return messages.envelope(n["type"], {**data, "unread_count": unread})
        return self.render("fragments/live_notification.html", n=n, unread_count=unread)

    def read(self, event: dict[str, Any], fmt: str) -> str:
        """Notifications marked read (on any tab or device of this user)."""
        ids, unread = event["ids"], event["unread_count"]
        if fmt == "json":
            return messages.envelope("notification-read", {"ids": ids, "unread_count": unread})
        return self.render("fragments/live_read.html", ids=ids, unread_count=unread)

    def announcement(self, event: dict[str, Any], fmt: str) -> str:
        """A system announcement for everybody."""
        a = event["announcement"]
        if fmt == "json":
            return messages.envelope("system-message", a)
        return self.render("fragments/live_announcement.html", a=a)

    def unread(self, unread: int, fmt: str) -> str:
        """The authoritative unread count (after the live stream may have missed reads)."""
        if fmt == "json":
            return messages.envelope("unread-count", {"unread_count": unread})
        return self.render("fragments/badge.html", unread_count=unread, oob=True)

    def connected(self, user: dict[str, Any], unread: int, fmt: str) -> str:
        """The first message on a socket: who you are and how many are unread."""
        if fmt == "json":
            return messages.envelope("connection-established", {**user, "unread_count": unread})
        return self.render("fragments/live_connected.html", unread_count=unread)
