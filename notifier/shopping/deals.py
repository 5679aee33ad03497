"""The deal rule and the deal check that turns new deals into one notification per user."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.synchronous.database import Database

from notifier.accounts.preferences import Preferences
from notifier.notifications.store import NotificationService

log = logging.getLogger(__name__)

# One check at a time across all workers, so two runs never tell a user the same deal twice.
LOCK_NAME = "notifier:lock:deal-check"


def is_deal(price_in_cents: int, regular_price_in_cents: int, target_in_cents: int | None) -> bool:
    """A price is a deal at or below the user's target when one is set, else below regular."""
    if target_in_cents is not None:
        return price_in_cents <= target_in_cents
    return price_in_cents < regular_price_in_cents


def deal_key(price: dict[str, Any]) -> str:
    """What a user is told about once: (item, store, price, valid_until)."""
    until = price.get("valid_until")
    until_text = until.replace(tzinfo=UTC).isoformat() if until else ""
    return f"{price['item_key']}|{price['store_id']}|{price['price_in_cents']}|{until_text}"


def deal_message(count: int) -> str:
    """The seed's wording for a deal notification."""
    return f"You have {count} new deal(s) on your watched items!"


@dataclass
class DealCheckResult:
    """What one run of the deal check found and stored."""

    users_notified: int = 0
    deals_found: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a job-complete notification."""
        return f"{self.deals_found} new deal(s) for {self.users_notified} user(s)"


class DealCheck:
    """Finds, per user, watched items whose best active price is a deal they were not told of."""

    def __init__(self, db: Database[Any], notifications: NotificationService) -> None:
        self._db = db
        self._notifications = notifications

    def run(self, item_keys: Iterable[str] | None = None) -> DealCheckResult:
        """Check every watched item (or only `item_keys`) and notify; idempotent."""
        now = datetime.now(UTC)
        watch_query: dict[str, Any] = {}
        if item_keys is not None:
            watch_query["item_key"] = {"$in": sorted(set(item_keys))}
        watches = list(self._db.watchlists.find(watch_query))
        best = self._best_prices({w["item_key"] for w in watches}, now)

        prefs = self._preferences({w["user_id"] for w in watches})
        candidates: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
        for w in watches:
            price = best.get(w["item_key"])
            if not price:
                continue
            cents, regular = price["price_in_cents"], price["regular_price_in_cents"]
            enough = prefs[w["user_id"]].deal_is_enough(cents, regular)
            if enough and is_deal(cents, regular, w.get("target_price_in_cents")):
                candidates[w["user_id"]].append((w, price))

        told = self._already_told(candidates)
        result = DealCheckResult()
        for user_id, pairs in sorted(candidates.items()):
            new = [(w, p) for w, p in pairs if deal_key(p) not in told[user_id]]
            if not new:
                continue
            new.sort(key=lambda pair: pair[0]["item_key"])
            keys = [deal_key(p) for _, p in new]
            data = {
                "deals": [
                    {
                        "item_name": w["item_name"],
                        "best_price_in_cents": p["price_in_cents"],
                        "regular_price_in_cents": p["regular_price_in_cents"],
                        "store_name": p["store_name"],
                        "store_id": p["store_id"],
                    }
                    for w, p in new
                ],
                "user_id": user_id,
                "message": deal_message(len(new)),
            }
            dedupe = "deals:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()
            doc = self._notifications.notify(
                user_id, "deal-notification", data, dedupe_key=dedupe, deal_keys=keys
            )
            if doc is not None:
                result.users_notified += 1
                result.deals_found += len(new)
                result.notifications.append(doc)
        return result

    def _preferences(self, user_ids: set[str]) -> dict[str, Preferences]:
        """Each user's preferences (one query)."""
        ids = [ObjectId(u) for u in user_ids if ObjectId.is_valid(u)]
        users = self._db.users.find({"_id": {"$in": ids}}, {"preferences": 1})
        found = {str(u["_id"]): Preferences.from_doc(u) for u in users}
        return {uid: found.get(uid, Preferences()) for uid in user_ids}

    def _best_prices(self, item_keys: set[str], now: datetime) -> dict[str, dict[str, Any]]:
        """Per item, the lowest active price across stores (ties: store id)."""
        if not item_keys:
            return {}
        best: dict[str, dict[str, Any]] = {}
        cursor = self._db.prices.find(
            {
                "item_key": {"$in": sorted(item_keys)},
                "$or": [{"valid_until": None}, {"valid_until": {"$gt": now}}],
            }
        )
        for p in cursor:
            current = best.get(p["item_key"])
            if current is None or (p["price_in_cents"], p["store_id"]) < (
                current["price_in_cents"],
                current["store_id"],
            ):
                best[p["item_key"]] = p
        return best

    def _already_told(
        self, candidates: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]
    ) -> dict[str, set[str]]:
        """Per user, which of the candidate deal keys an earlier notification carried."""
        told: dict[str, set[str]] = defaultdict(set)
        keys = sorted({deal_key(p) for pairs in candidates.values() for _, p in pairs})
        if not keys:
            return told
        cursor = self._db.notifications.find(
            {"user_id": {"$in": sorted(candidates)}, "deal_keys": {"$in": keys}},
            {"user_id": 1, "deal_keys": 1},
        )
        for doc in cursor:
            told[doc["user_id"]].update(doc["deal_keys"])
        return told
