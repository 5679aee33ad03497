"""Bulk actions on a user's notifications: mark read, archive, unarchive.

By ids (at most MAX_IDS), or on everything matching the history filters a batch at a
time: the newest BULK_LIMIT matches a request, and whether more match, so a request's
work is bounded by what it changes however long the history. Archiving marks read first
(notifier/notifications/store.py), so the unread count stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from notifier import validation
from notifier.errors import InputError
from notifier.notifications.filters import FILTER_NAMES, NotificationFilter
from notifier.notifications.store import NotificationRepository, parse_id

ACTIONS = ("read", "archive", "unarchive")
MAX_IDS = 500
BULK_LIMIT = 1000  # notifications one action on "all matching" changes per request
_FLAGS = ("unread", "archived")  # filters that may be given as true/false


@dataclass(frozen=True)
class BulkResult:
    """How many changed, whether more match, and which went from unread to read."""

    changed: int
    more: bool
    read: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BulkRequest:
    """A bulk action on the notifications named by id, or on all matching a filter."""

    action: str
    seqs: list[int] | None = None
    filters: NotificationFilter | None = None

    @property
    def scope(self) -> NotificationFilter:
        """The filter narrowed to what the action can still change (so a repeat moves on)."""
        f = self.filters or NotificationFilter()
        if self.action == "read":
            return replace(f, unread=True)
        return replace(f, archived=self.action == "unarchive")

    @classmethod
    def parse(cls, body: object) -> BulkRequest:
        """`{"action", "ids": [...]}` or `{"action", "filter": {...}}`; InputError when not."""
        b = validation.body_object(body, ("action", "ids", "filter"))
        action = b.get("action")
        if action not in ACTIONS:
            raise InputError("action must be read, archive or unarchive")
        if ("ids" in b) == ("filter" in b):
            raise InputError('give "ids" (a list of notification ids) or "filter" (an object)')
        if "ids" in b:
            return cls(action, seqs=parse_ids(b["ids"]))
        raw = b["filter"]
        if not isinstance(raw, dict):
            raise InputError("filter must be an object of history filters")
        validation.body_object(raw, FILTER_NAMES)
        text: dict[str, str] = {}
        for name, value in raw.items():
            if isinstance(value, bool) and name in _FLAGS:
                value = "true" if value else "false"
            if not isinstance(value, str):
                kind = "true, false or a string" if name in _FLAGS else "a string"
                raise InputError(f"filter.{name} must be {kind}")
            text[name] = value
        return cls(action, filters=NotificationFilter.parse(text.get))

    async def apply(self, repo: NotificationRepository, user_id: str) -> BulkResult:
        """Do it: by ids, or to the newest BULK_LIMIT notifications in scope."""
        more = False
        if self.seqs is not None:
            seqs = self.seqs
        else:
            seqs, more = await repo.matching(user_id, self.scope, BULK_LIMIT)
        if not seqs:
            return BulkResult(0, more)
        if self.action == "read":
            read = await repo.mark_read(user_id, seqs)
            return BulkResult(len(read), more, read)
        if self.action == "archive":
            read, archived = await repo.archive(user_id, seqs)
            return BulkResult(archived, more, read)
        return BulkResult(await repo.unarchive(user_id, seqs), more)


def parse_ids(ids: object) -> list[int]:
    """A list of 1 to MAX_IDS notification ids, as seqs."""
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise InputError(f'"ids" must be a list of 1 to {MAX_IDS} notification ids')
    return [parse_id(i, "ids") for i in ids]
