"""A shopper's notification preferences: email mode, push per type, quiet hours, discount."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError

EMAIL_MODES = ("never", "offline", "always", "hourly", "daily")
DIGEST_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True)
class Preferences:
    """How and when a shopper wants to hear about deals."""

    email_mode: str = "offline"
    quiet_hours_start: str | None = None  # "22:00", in the user's time zone
    quiet_hours_end: str | None = None  # "07:00"
    timezone: str = "UTC"
    min_discount_percent: int = 0
    # Web Push to the browsers the shopper subscribed (notifier/push), per type.
    push_deals: bool = True
    push_announcements: bool = True

    @classmethod
    def parse(cls, body: object) -> Preferences:
        """Read preferences from a JSON body (every field optional); InputError when bad."""
        b = validation.body_object(body, list(asdict(cls())))
        mode = b.get("email_mode", "offline")
        if mode not in EMAIL_MODES:
            raise InputError("email_mode must be one of " + ", ".join(EMAIL_MODES))
        start, end = b.get("quiet_hours_start"), b.get("quiet_hours_end")
        if (start is None) != (end is None):
            raise InputError("give both quiet_hours_start and quiet_hours_end, or neither")
        for name, value in (("quiet_hours_start", start), ("quiet_hours_end", end)):
            if value is not None and (not isinstance(value, str) or not _CLOCK.fullmatch(value)):
                raise InputError(f"{name} must be a time like 22:00")
        if start is not None and start == end:
            raise InputError("quiet hours must not start and end at the same time")
        tz = b.get("timezone", "UTC")
        if not isinstance(tz, str) or not _zone(tz):
            raise InputError("timezone must be an IANA time zone name such as Europe/Paris")
        discount = b.get("min_discount_percent", 0)
        if isinstance(discount, bool) or not isinstance(discount, int) or not 0 <= discount <= 100:
            raise InputError("min_discount_percent must be a whole number from 0 to 100")
        pushes = [b.get(name, True) for name in ("push_deals", "push_announcements")]
        if not all(isinstance(p, bool) for p in pushes):
            raise InputError("push_deals and push_announcements must be true or false")
        return cls(mode, start, end, tz, discount, *pushes)

    @classmethod
    def from_doc(cls, user: dict[str, Any] | None) -> Preferences:
        """The stored preferences of a user document (defaults when none)."""
        stored = (user or {}).get("preferences") or {}
        known = set(asdict(cls()))
        return cls(**{k: v for k, v in stored.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        """As the API shows them."""
        return asdict(self)

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
