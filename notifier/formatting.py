"""How money and times read, everywhere: pages, live fragments, emails and the API."""

from __future__ import annotations

from datetime import UTC, datetime


def money(cents: int | None) -> str:
    """Cents as dollars: 1299 -> "$12.99"; None -> ""."""
    if cents is None:
        return ""
    return f"${cents // 100:,}.{cents % 100:02d}"


def iso(when: datetime) -> str:
    """UTC time as ISO 8601 with milliseconds and a Z."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
