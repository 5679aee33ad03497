"""Watchlists: the items a shopper wants to hear about, with an optional target price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from notifier import validation
from notifier.errors import InputError, NotFound
from notifier.shopping import alerts
from notifier.storage.writes import Upsert, apply_async

MAX_ITEMS = 200
MAX_DISCOUNT_PERCENT = 99
UNDO_COLLECTION = "watchlist_removed"
UNDO_SECONDS = 3600  # how long a removed watch can be put back (a TTL index)


Target = Annotated[
    validation.Cents | None,
    msgspec.Meta(description="alert when the best price crosses to this or below, then only lower"),
]
Discount = Annotated[
    Annotated[
        int,
        validation.must(
            f"must be a whole number from 1 to {MAX_DISCOUNT_PERCENT}, or null",
            ge=1,
            le=MAX_DISCOUNT_PERCENT,
        ),
    ]
    | None,
    msgspec.Meta(
        description="alert only for a discount of at least this much off the regular price"
    ),
]
Realert = Annotated[
    Annotated[
        int,
        validation.must(
            f"must be a whole number from 1 to {alerts.MAX_REALERT_HOURS}, or null",
            ge=1,
            le=alerts.MAX_REALERT_HOURS,
        ),
    ]
    | None,
    msgspec.Meta(
        description="at most one alert per this many hours, unless the price is a further 10% lower"
    ),
]


class AlertRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A watch's alert rules to change (PATCH): those given; null clears one."""

    target_price_in_cents: Target | msgspec.UnsetType = msgspec.UNSET
    min_discount_percent: Discount | msgspec.UnsetType = msgspec.UNSET
    realert_hours: Realert | msgspec.UnsetType = msgspec.UNSET


ALERT_FIELDS = AlertRules.__struct_fields__


class WatchInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An item to watch, with its alert rules (see notifier.shopping.alerts)."""

    item_name: validation.Name
    target_price_in_cents: Target = None
    min_discount_percent: Discount = None
    realert_hours: Realert = None

    @classmethod
    def parse(cls, body: object) -> WatchInput:
        """Read a watch from a JSON body; raise InputError naming the bad field."""
        item = validation.decode(cls, body)
        name = validation.text(item.item_name, "item_name", validation.NAME_LENGTH)
        return msgspec.structs.replace(item, item_name=name)

    def rules(self) -> dict[str, int | None]:
        """The rules watching again sets: the target as given (as it always did), the
        others only when given (a PATCH clears them), so re-adding keeps them."""
        given = {name: getattr(self, name) for name in ALERT_FIELDS}
        return {k: v for k, v in given.items() if v is not None or k == "target_price_in_cents"}


def parse_rules(body: object) -> dict[str, int | None]:
    """The alert rules a PATCH changes (only those given; null clears one)."""
    given = msgspec.structs.asdict(validation.decode(AlertRules, body))
    rules = {k: v for k, v in given.items() if v is not msgspec.UNSET}
    if not rules:
        raise InputError(f"give at least one of {', '.join(ALERT_FIELDS)}")
    return rules


def set_rules(rules: dict[str, int | None]) -> dict[str, Any]:
    """The update that sets alert rules; a new target is armed afresh."""
    update: dict[str, Any] = {"$set": dict(rules)}
    if "target_price_in_cents" in rules:
        update["$unset"] = {"target_low": ""}
    return update


def watch(user_id: str, item: WatchInput) -> Upsert:
    """The write that adds an item to a watchlist, or updates its target and rules."""
    update = set_rules(item.rules())
    update["$set"]["item_name"] = item.item_name
    update["$setOnInsert"] = {"created_at": datetime.now(UTC)}
    return Upsert(
        "watchlists", {"user_id": user_id, "item_key": validation.item_key(item.item_name)}, update
    )


class WatchlistRepository:
    """A shopper's watchlist in MongoDB (web process, asyncio client)."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._watchlists = db.watchlists
        self._db = db

    async def items(self, user_id: str) -> list[dict[str, Any]]:
        """The watched items, in the order they were added."""
        cursor = self._watchlists.find({"user_id": user_id}).sort([("created_at", 1), ("_id", 1)])
        return [_shown(d) async for d in cursor]

    async def add(self, user_id: str, item: WatchInput) -> None:
        """Watch an item (idempotent: watching it again updates the target price)."""
        key = validation.item_key(item.item_name)
        if not await self._watchlists.find_one({"user_id": user_id, "item_key": key}):
            if await self._watchlists.count_documents({"user_id": user_id}) >= MAX_ITEMS:
                raise InputError(f"a watchlist holds at most {MAX_ITEMS} items", "watchlist_full")
        await apply_async(self._db, [watch(user_id, item)])

    async def get(self, user_id: str, key: str) -> dict[str, Any] | None:
        """One watch (by item key) with its rules; None when the item is not watched."""
        d = await self._watchlists.find_one({"user_id": user_id, "item_key": key})
        return None if d is None else _shown(d)

    async def change_rules(
        self, user_id: str, item_name: str, rules: dict[str, int | None]
    ) -> dict[str, Any]:
        """Change a watch's alert rules; the watch as it is now. NotFound when not watched."""
        changed = await self._watchlists.find_one_and_update(
            {"user_id": user_id, "item_key": validation.item_key(item_name)},
            set_rules(rules),
            return_document=ReturnDocument.AFTER,
        )
        if changed is None:
            raise NotFound(f"{item_name!r} is not on your watchlist")
        return _shown(changed)

    async def remove(self, user_id: str, item_name: str) -> str:
        """Stop watching an item; NotFound when it was not watched.

        The watch is kept aside for UNDO_SECONDS (whatever fields it has: target, alert
        settings, when it was added), so an undo puts back exactly what was removed.
        Returns the key of what was kept (for `restore`).
        """
        removed = await self._watchlists.find_one_and_delete(
            {"user_id": user_id, "item_key": validation.item_key(item_name)}
        )
        if removed is None:
            raise NotFound(f"{item_name!r} is not on your watchlist")
        removed.pop("_id", None)
        undo_id = ObjectId()
        await self._db[UNDO_COLLECTION].insert_one(
            {"_id": undo_id, "user_id": user_id, "watch": removed, "removed_at": datetime.now(UTC)}
        )
        return str(undo_id)

    async def restore(self, user_id: str, undo_id: str) -> str:
        """Put back a watch removed less than UNDO_SECONDS ago; returns its item's name.

        NotFound when there is nothing to undo (too late, already undone, or not the
        user's); watching the item again meanwhile keeps the newer watch.
        """
        kept = None
        if ObjectId.is_valid(undo_id):
            kept = await self._db[UNDO_COLLECTION].find_one_and_delete(
                {"_id": ObjectId(undo_id), "user_id": user_id}
            )
        if kept is None:
            raise NotFound("there is nothing to undo")
        watch = kept["watch"]
        key = {"user_id": user_id, "item_key": watch["item_key"]}
        if not await self._watchlists.find_one(key, {"_id": 1}):
            if await self._watchlists.count_documents({"user_id": user_id}) >= MAX_ITEMS:
                raise InputError(f"a watchlist holds at most {MAX_ITEMS} items", "watchlist_full")
        fields = {k: v for k, v in watch.items() if k not in key}
        await self._watchlists.update_one(key, {"$setOnInsert": fields}, upsert=True)
        return str(watch["item_name"])


def _shown(watch: dict[str, Any]) -> dict[str, Any]:
    """What the API and pages show of a watch: its name and rules, not what it remembers."""
    return {"item_name": watch["item_name"], **{k: watch.get(k) for k in ALERT_FIELDS}}
