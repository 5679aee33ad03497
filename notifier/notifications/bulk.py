"""Bulk actions on a user's notifications: mark read, archive, unarchive.

By ids (at most MAX_IDS), or on everything matching the history filters a batch at a
time: the newest BULK_LIMIT matches a request, and whether more match, so a request's
work is bounded by what it changes however long the history. Archiving marks read first
(notifier/notifications/store.py), so the unread count stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, get_args

import msgspec

from notifier import validation
from notifier.errors import InputError
from notifier.kinds import TYPE_NAMES, NotificationType
from notifier.notifications.filters import MAX_QUERY, TIME_PATTERN, NotificationFilter
from notifier.notifications.store import NotificationRepository, parse_id

Action = Literal["read", "archive", "unarchive"]
ACTIONS: tuple[str, ...] = get_args(Action)
MAX_IDS = 500
BULK_LIMIT = 1000  # notifications one action on "all matching" changes per request


Ids = Annotated[
    list[validation.NotificationId],
    validation.must(
        f"must be a list of 1 to {MAX_IDS} notification ids", min_length=1, max_length=MAX_IDS
    ),
]
ALL = Annotated[bool, validation.must("must be true", extra_json_schema={"const": True})]


class ReadRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Mark read: `ids`, or `all: true` (one of them)."""

    ids: Ids | msgspec.UnsetType = msgspec.UNSET
    all: ALL | msgspec.UnsetType = msgspec.UNSET

    @classmethod
    def parse(cls, body: object) -> list[int] | None:
        """The seqs to mark read, or None for all; InputError when it names neither."""
        given = validation.decode(cls, body)
        if given.all is True and given.ids is msgspec.UNSET:
            return None
        if given.ids is msgspec.UNSET or given.all is not msgspec.UNSET:
            raise InputError(
                f'give "ids" (a list of 1 to {MAX_IDS} notification ids) or "all": true'
            )
        return [parse_id(i, "ids") for i in given.ids]  # fullmatch: no trailing newline


A_STRING = "must be a string"
Flag = (
    bool
    | Annotated[
        str,
        validation.must(
            "must be true, false or a string",
            extra_json_schema={"enum": ["", "0", "1", "true", "false"]},
        ),
    ]
)
Query = Annotated[str, validation.must(A_STRING, extra_json_schema={"maxLength": MAX_QUERY})]
Time = Annotated[
    str, validation.must(A_STRING, extra_json_schema={"pattern": f"^$|{TIME_PATTERN}"})
]
TYPE_VALUES = ["", *(t.value for t in NotificationType), *TYPE_NAMES]
Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class Filter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The history filters of GET /api/notifications, as a bulk action takes them."""

    unread: Flag | Unset = UNSET
    type: (
        Annotated[str, validation.must(A_STRING, extra_json_schema={"enum": TYPE_VALUES})] | Unset
    ) = UNSET
    item: Query | Unset = UNSET
    store: Query | Unset = UNSET
    q: Query | Unset = UNSET
    since: Time | Unset = UNSET
    until: Time | Unset = UNSET
    archived: (
        bool
        | Annotated[
            str,
            validation.must(
                "must be true, false or a string",
                extra_json_schema={"enum": ["", "0", "1", "true", "false", "all"]},
            ),
        ]
        | Unset
    ) = UNSET


class BulkInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A bulk action by ids, or on every notification matching the filter (the newest
    1000 a request, BULK_LIMIT: `more` says whether to ask again)."""

    action: Annotated[Action, validation.must("must be read, archive or unarchive")]
    ids: Ids | Unset = UNSET
    filter: Annotated[Filter, validation.must("must be an object of history filters")] | Unset = (
        UNSET
    )


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
        given = validation.decode(BulkInput, body)
        if (given.ids is msgspec.UNSET) == (given.filter is msgspec.UNSET):
            raise InputError('give "ids" (a list of notification ids) or "filter" (an object)')
        if not isinstance(given.ids, msgspec.UnsetType):
            return cls(given.action, seqs=[parse_id(i, "ids") for i in given.ids])
        assert not isinstance(given.filter, msgspec.UnsetType)
        text = {
            name: ("true" if value else "false") if isinstance(value, bool) else value
            for name, value in msgspec.structs.asdict(given.filter).items()
            if value is not msgspec.UNSET
        }
        return cls(given.action, filters=NotificationFilter.parse(text.get))

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
