"""A shopper's notification preferences: email mode, push per type, quiet hours, discount."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError

EmailMode = Literal["never", "offline", "always", "hourly", "daily"]
EMAIL_MODES: tuple[str, ...] = get_args(EmailMode)
DIGEST_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_CLOCK = re.compile(CLOCK_PATTERN)
Clock = Annotated[str, validation.must("must be a time like 22:00", pattern=CLOCK_PATTERN)]
TRUE_OR_FALSE = validation.must("must be true or false")


class Preferences(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How and when a shopper wants to hear about deals (stored on the user, and the body
    of PUT /api/preferences: fields left out take defaults). Both quiet hours or neither,
    and not equal."""

    email_mode: Annotated[
        EmailMode, validation.must("must be one of " + ", ".join(EMAIL_MODES))
    ] = "offline"
    quiet_hours_start: Clock | None = None  # "22:00", in the user's time zone
    quiet_hours_end: Clock | None = None  # "07:00"
    timezone: Annotated[
        str,
        validation.must(
            "must be an IANA time zone name such as Europe/Paris",
            description="an IANA zone name",
        ),
    ] = "UTC"
    min_discount_percent: Annotated[
        int, validation.must("must be a whole number from 0 to 100", ge=0, le=100)
    ] = 0
    # Web Push to the browsers the shopper subscribed (notifier/push), per type.
    push_deals: Annotated[
        bool,
        TRUE_OR_FALSE,
        msgspec.Meta(
            description="push deals nobody saw within PUSH_ACK_WAIT to subscribed browsers"
        ),
    ] = True
    push_announcements: Annotated[bool, TRUE_OR_FALSE] = True

    @classmethod
    def parse(cls, body: object) -> Preferences:
        """Read preferences from a JSON body (every field optional); InputError when bad."""
        prefs = validation.decode(cls, body)
        start, end = prefs.quiet_hours_start, prefs.quiet_hours_end
        if (start is None) != (end is None):
            raise InputError("give both quiet_hours_start and quiet_hours_end, or neither")
        # msgspec searches the pattern, whose `$` admits a trailing newline: "22:00\n".
        for name, value in (("quiet_hours_start", start), ("quiet_hours_end", end)):
            if value is not None and not _CLOCK.fullmatch(value):
                raise InputError(f"{name} must be a time like 22:00")
        if start is not None and start == end:
            raise InputError("quiet hours must not start and end at the same time")
        if not _zone(prefs.timezone):
            raise InputError("timezone must be an IANA time zone name such as Europe/Paris")
        return prefs

    @classmethod
    def from_doc(cls, user: dict[str, Any] | None) -> Preferences:
        """The stored preferences of a user document (defaults when none)."""
        stored = (user or {}).get("preferences") or {}
        return cls(**{k: v for k, v in stored.items() if k in cls.__struct_fields__})

    def to_json(self) -> dict[str, Any]:
        """As the API shows them."""
        return msgspec.structs.asdict(self)

    def quiet_until(self, now: datetime) -> datetime | None:
        """When the quiet hours around `now` end (an aware datetime), or None if not quiet."""
        if self.quiet_hours_start is None or self.quiet_hours_end is None:
            return None
        zone = _zone(self.timezone) or ZoneInfo("UTC")
        local = now.astimezone(zone)
        start, end = _clock(self.quiet_hours_start), _clock(self.quiet_hours_end)
        today_end = datetime.combine(local.date(), end, zone)
        if start < end:  # e.g. 13:00-15:00, within one day
            quiet = start <= local.time() < end
            return today_end if quiet else None
        # e.g. 22:00-07:00, across midnight
        if local.time() >= start:
            return today_end + timedelta(days=1)
        if local.time() < end:
            return today_end
        return None

    def deal_is_enough(self, price_in_cents: int, regular_price_in_cents: int) -> bool:
        """Whether a deal's discount reaches the user's minimum."""
        if self.min_discount_percent == 0:
            return True
        if regular_price_in_cents <= 0:
            return False
        discount = (regular_price_in_cents - price_in_cents) * 100
        return discount >= self.min_discount_percent * regular_price_in_cents


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


class PreferencesRepository:
    """Preferences stored on the user document (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._users = db.users

    async def get(self, user_id: str) -> Preferences:
        """The user's preferences."""
        return Preferences.from_doc(await self._users.find_one({"_id": _oid(user_id)}))

    async def put(self, user_id: str, prefs: Preferences) -> None:
        """Replace the user's preferences."""
        await self._users.update_one(
            {"_id": _oid(user_id)}, {"$set": {"preferences": prefs.to_json()}}
        )


def _oid(user_id: str) -> ObjectId:
    try:
        return ObjectId(user_id)
    except InvalidId:
        raise InputError("unknown user") from None
