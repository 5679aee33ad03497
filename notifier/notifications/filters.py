"""Filtering a user's notifications: the search keys stored on each, and the filters read.

A notification carries, from the moment it is written, the keys its filters match on:
`items` (item keys), `stores` (store ids) and `terms` (every prefix of every word of its
item names, so "mil" finds "Milk 1L" by equality). Each has a (user_id, key, seq) index,
so a filtered page is a seq range read through an index, like an unfiltered one.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier import validation
from notifier.errors import InputError
from notifier.kinds import TYPE_NAMES, NotificationType
from notifier.notifications import state

MAX_TERM = 20  # longer words are found by their first 20 letters
MAX_QUERY = 100
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The searchable words of a text, case folded."""
    return _WORD.findall(text.casefold())


def search_fields(type: str, data: Mapping[str, Any]) -> dict[str, list[str]]:
    """The keys a notification's filters match on, computed when it is written."""
    if type != NotificationType.DEAL:
        return {}
    deals = data.get("deals") or []
    items = sorted({validation.item_key(d["item_name"]) for d in deals})
    stores = sorted({str(d["store_id"]) for d in deals if d.get("store_id")})
    terms = sorted(
        {
            w[:n]
            for d in deals
            for w in words(d["item_name"])
            for n in range(1, min(len(w), MAX_TERM) + 1)
        }
    )
    return {"items": items, "stores": stores, "terms": terms}


@dataclass(frozen=True)
class NotificationFilter:
    """What a history page or API call asks for; empty matches everything."""

    unread: bool = False
    type: str | None = None
    item: str | None = None  # an item key
    store: str | None = None  # a store id
    q: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Archived notifications leave the default views: False (the default) leaves them
    # out, True shows only them, None shows both.
    archived: bool | None = False

    @property
    def empty(self) -> bool:
        """True when nothing is filtered (the default view: everything not archived)."""
        return self == NotificationFilter()

    @property
    def terms(self) -> list[str]:
        """The words of `q`, each cut to what `terms` stores."""
        return [w[:MAX_TERM] for w in words(self.q or "")]

    @property
    def single(self) -> bool:
        """True when the index query is the whole filter (nothing left for `matches`).

        Leaving archived ones out is always left to `matches` (archived is absent from
        most notifications), so only a filter that shows them too can be single.
        """
        used = [bool(self.unread), bool(self.type), bool(self.item), bool(self.store)]
        used.append(self.archived is True)
        if self.archived is False:
            return False
        return sum(used) + len(self.terms) <= 1 and not (self.since or self.until)

    def index_query(self, user_id: str) -> dict[str, Any]:
        """The query sent to the server: the user and the most selective filter alone.

        One equality ahead of seq in one index, so the server reads a seq range of that
        index. Combining several in one query makes some servers' planners give up the
        indexes for a collection scan, so the others are checked by `matches`.
        """
        query: dict[str, Any] = {"user_id": user_id}
        terms = self.terms
        for name, wanted in (
            ("items", self.item),
            ("terms", terms[0] if terms else None),
            ("stores", self.store),
            ("type", self.type),
            ("read", False if self.unread else None),
            ("archived", True if self.archived else None),
        ):
            if wanted is not None:
                query[name] = wanted
                break
        return query

    def matches(self, doc: dict[str, Any]) -> bool:
        """Whether a stored notification passes every filter."""
        if self.archived is not None and bool(doc.get("archived")) != self.archived:
            return False
        if self.unread and doc.get("read"):
            return False
        if self.type and doc.get("type") != self.type:
            return False
        if self.item and self.item not in doc.get("items", ()):
            return False
        if self.store and self.store not in doc.get("stores", ()):
            return False
        stored_terms = doc.get("terms", ())
        if any(t not in stored_terms for t in self.terms):
            return False
        created = state.utc(doc.get("created_at"))
        if self.since and (created is None or created < self.since):
            return False
        return not (self.until and (created is None or created > self.until))

    def params(self) -> dict[str, str]:
        """These filters as query parameters (for links that keep them)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "archived":
                if value is not False:
                    out["archived"] = "all" if value is None else "true"
                continue
            if value is None or value is False:
                continue
            if value is True:
                out[f.name] = "true"
            elif isinstance(value, datetime):
                out[f.name] = value.isoformat().replace("+00:00", "Z")
            else:
                out[f.name] = str(value)
        return out

    def url(self, **extra: str) -> str:
        """`?filters&extra`, or "" with neither."""
        params = {**self.params(), **extra}
        return "?" + urllib.parse.urlencode(params) if params else ""

    @classmethod
    def parse(cls, arg: Callable[[str], str | None]) -> NotificationFilter:
        """Read the filters from query parameters; InputError naming a bad one.

        A blank parameter (a form's empty field) filters nothing; a `q` without a letter
        or digit searches for nothing, so it too filters nothing.
        """
        raw = {name: arg(name) or "" for name in FILTER_NAMES}
        for name in ("item", "store", "q"):
            if len(raw[name]) > MAX_QUERY:
                raise InputError(f"{name} must be at most {MAX_QUERY} characters")
        # Free text is trimmed; the rest is taken as given (" true" is not a value).
        value = {
            name: (raw[name].strip() if name in ("item", "store", "q") else raw[name]) or None
            for name in FILTER_NAMES
        }
        if value["unread"] not in (None, "0", "1", "true", "false"):
            raise InputError("unread must be true or false")
        if value["archived"] not in (None, "0", "1", "true", "false", "all"):
            raise InputError("archived must be true, false or all")
        type_ = value["type"]
        if type_ is not None:
            type_ = TYPE_NAMES.get(type_, type_)
            if type_ not in TYPE_NAMES.values():
                raise InputError(
                    f"type must be one of {', '.join(NotificationType)}"
                    f" (or {', '.join(TYPE_NAMES)})"
                )
        since, until = _time(value["since"], "since"), _time(value["until"], "until")
        if since and until and since > until:
            raise InputError("since must not be after until")
        item, q = value["item"], value["q"]
        return cls(
            unread=value["unread"] in ("1", "true"),
            type=type_,
            item=validation.item_key(item) if item else None,
            store=value["store"],
            q=q if q and words(q) else None,
            since=since,
            until=until,
            archived=None if value["archived"] == "all" else value["archived"] in ("1", "true"),
        )


FILTER_NAMES = ("unread", "type", "item", "store", "q", "since", "until", "archived")
# ISO 8601 as the API documents it: a date, or a date and time with an optional zone.
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_TIME = re.compile(TIME_PATTERN)


def _time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (a date alone is its midnight, UTC when no zone is given)."""
    if value is None:
        return None
    try:
        if not _TIME.fullmatch(value):  # "$" alone allows a trailing "\n"
            raise ValueError(value)
        when = datetime.fromisoformat(value.upper().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise InputError(f"{name} must be an ISO 8601 time, like 2026-05-01T12:00:00Z") from None
    try:
        if name == "until" and len(value) == len("2026-05-01"):
            when += timedelta(days=1, microseconds=-1)  # a date alone: until the day ends
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+23:59 is before year 1 in UTC
        raise InputError(f"{name} is out of range") from None
