"""Alert rules a shopper would choose: when a deal on a watched item is news.

A deal is a price below the regular one (or at or below the shopper's target), but
only news is an alert, as price trackers (Keepa, camelcamelcamel) have it:

- with a target: the best price crossing to the target or below, then only a lower
  price while it stays there; back above the target (or no price at all: the deal
  expired) arms the watch again;
- without one: a deal that beats every price the shopper was told of for that item in
  the last ALERT_MEMORY_DAYS (a flyer's new low is news, the same store going back up
  and down above it is not);
- and per watch, optionally: a minimum discount, and a re-alert interval (at most one
  alert per item per N hours, unless the price beats the last alert by a further
  REALERT_STEP_PERCENT).

What a shopper was told lives on the watch document itself, in fixed fields and an
array (never keyed by item text): `alerted` (the prices told in the memory window,
oldest first), `last_alert` (for the interval, whatever the memory) and `target_low`
(the lowest price told during the current stay at or below the target). The deal
check reads it with the watches it reads anyway and writes it back in its chunk's
bulk write, so the rules cost no round trip of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MEMORY_DAYS = 7  # ALERT_MEMORY_DAYS' default
REALERT_STEP_PERCENT = 10  # within the re-alert interval, a price must be this much lower
MAX_REMEMBERED = 50  # prices kept per watch: each one told beat the others, so few in a week
MAX_REALERT_HOURS = 24 * 30
ALERT_FIELDS = ("alerted", "last_alert", "target_low")  # what a watch remembers


@dataclass(frozen=True)
class AlertRules:
    """What the shopper chose for one watch (None: not set)."""

    target_price_in_cents: int | None = None
    min_discount_percent: int | None = None
    realert_hours: int | None = None

    @classmethod
    def of(cls, watch: dict[str, Any]) -> AlertRules:
        """The rules stored on a watch document."""
        return cls(
            watch.get("target_price_in_cents"),
            watch.get("min_discount_percent"),
            watch.get("realert_hours"),
        )


def is_deal(price_in_cents: int, regular_price_in_cents: int, target_in_cents: int | None) -> bool:
    """A price is a deal at or below the user's target when one is set, else below regular."""
    if target_in_cents is not None:
        return price_in_cents <= target_in_cents
    return price_in_cents < regular_price_in_cents


def big_enough(price: int, regular: int, min_percent: int | None) -> bool:
    """Whether the discount reaches `min_percent` (exact, in whole cents: no rounding)."""
    if not min_percent:
        return True
    return regular > 0 and (regular - price) * 100 >= min_percent * regular


def remembered(watch: dict[str, Any], now: datetime, memory_days: int) -> list[dict[str, Any]]:
    """The prices the shopper was told of for this watch within the memory window."""
    since = now - timedelta(days=memory_days)
    return [a for a in watch.get("alerted") or [] if _aware(a["at"]) > since]


def is_news(watch: dict[str, Any], price: dict[str, Any], now: datetime, memory_days: int) -> bool:
    """Whether the item's best current price is worth an alert to this watcher."""
    rules = AlertRules.of(watch)
    cents, regular = price["price_in_cents"], price["regular_price_in_cents"]
    target = rules.target_price_in_cents
    if not is_deal(cents, regular, target):
        return False
    if not big_enough(cents, regular, rules.min_discount_percent):
        return False
    if target is not None:  # armed, or lower than the lowest told while under the target
        low = watch.get("target_low")
        if low is not None and cents >= low:
            return False
    elif any(cents >= a["price_in_cents"] for a in remembered(watch, now, memory_days)):
        return False
    return not _held(watch, cents, rules.realert_hours, now)


def _held(watch: dict[str, Any], cents: int, hours: int | None, now: datetime) -> bool:
    """Whether the re-alert interval holds this price back (no further step below the last)."""
    last = watch.get("last_alert")
    if not hours or not last or _aware(last["at"]) <= now - timedelta(hours=hours):
        return False
    return cents * 100 > last["price_in_cents"] * (100 - REALERT_STEP_PERCENT)


def told(watch: dict[str, Any], price: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The update that remembers the shopper was told of this price.

    A push (kept to the newest MAX_REMEMBERED), not the array rewritten: two checks that
    told one watch at once both count. Entries older than the memory are skipped on
    reading (`remembered`) and fall off the end in time.
    """
    cents = price["price_in_cents"]
    entry = {"price_in_cents": cents, "at": now}
    fields: dict[str, Any] = {"last_alert": entry}
    target = watch.get("target_price_in_cents")
    if target is not None and cents <= target:
        fields["target_low"] = cents
    return {
        "$set": fields,
        "$push": {"alerted": {"$each": [entry], "$slice": -MAX_REMEMBERED}},
    }


def rearm(watch: dict[str, Any], price: dict[str, Any] | None) -> dict[str, Any] | None:
    """The update that arms a target again once the best price left it; None if nothing to do."""
    target = watch.get("target_price_in_cents")
    if watch.get("target_low") is None:
        return None
    if target is None or price is None or price["price_in_cents"] > target:
        return {"$unset": {"target_low": ""}}
    return None


def _aware(when: datetime) -> datetime:
    """MongoDB hands back naive UTC datetimes."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
