"""Watchlists: the items a shopper wants to hear about, with an optional target price.

The cap of MAX_ITEMS holds under concurrency (issue 23 #6: forty adds at once at 199 of
200 stored 202): a new watch first takes a place in its user's counter (`watch_counts`,
one conditional increment that refuses past the cap), then is written; a place taken for
nothing (the item was added meanwhile, or the write failed) is given back. A counter left
too high by a process that died between the two is recounted once it has been quiet for
RECOUNT_AFTER: no place can still be in flight by then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from notifier import validation
from notifier.errors import InputError, NotFound
from notifier.shopping import alerts
from notifier.shopping import items as known_items
from notifier.storage.writes import Upsert

MAX_ITEMS = 200
MAX_DISCOUNT_PERCENT = 99
UNDO_COLLECTION = "watchlist_removed"
UNDO_SECONDS = 3600  # how long a removed watch can be put back (a TTL index)
COUNTS_COLLECTION = "watch_counts"  # per user: `n` places taken, `at` when it last moved
RECOUNT_AFTER = timedelta(seconds=60)  # a full counter this quiet is checked against the watches


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
        name = validation.name(item.item_name, "item_name")
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
    # Watching again (in other case or spacing) keeps the name the watch was made with.
    update["$setOnInsert"] = {"item_name": item.item_name, "created_at": datetime.now(UTC)}
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

    async def add(self, user_id: str, item: WatchInput) -> tuple[str, bool]:
        """Watch an item (idempotent: watching it again updates the target price).

        Returns the name it is watched under (a known item's display name when a store
        has priced one of that key: known_items.display_name) and whether it is priced.
        """
        name, priced = await known_items.display_name(self._db, item.item_name)
        write = watch(user_id, msgspec.structs.replace(item, item_name=name))
        found = await self._watchlists.find_one_and_update(
            write.filter, write.update, {"item_name": 1}
        )
        if found is not None:  # watched already: a new target, no new place, same name
            return str(found["item_name"]), priced
        await self._take_place(user_id)
        await self._write_in_place(user_id, write.filter, write.update)
        return name, priced

    async def _write_in_place(
        self, user_id: str, key: dict[str, Any], update: dict[str, Any]
    ) -> None:
        """Upsert a watch a place was taken for; give the place back unless it inserted."""
        try:
            done = await self._watchlists.update_one(key, update, upsert=True)
        except BaseException:
            await self._give_back(user_id)
            raise
        if done.upserted_id is None:  # another request added it meanwhile
            await self._give_back(user_id)

    async def _take_place(self, user_id: str) -> None:
        """One more watch for this user, or InputError `watchlist_full`; one write usually."""
        counts = self._db[COUNTS_COLLECTION]
        for _ in range(3):
            now = datetime.now(UTC)
            taken = await counts.update_one(
                {"_id": user_id, "n": {"$lt": MAX_ITEMS}},
                {"$inc": {"n": 1}, "$set": {"at": now}},
            )
            if taken.modified_count:
                return
            counter = await counts.find_one({"_id": user_id})
            if counter is None:  # the first add since counters exist: start from the watches
                stored = await self._watchlists.count_documents({"user_id": user_id})
                try:
                    await counts.insert_one({"_id": user_id, "n": stored, "at": now})
                except DuplicateKeyError:
                    pass  # a concurrent add started it
                continue
            if not await self._recounted(counter, now):
                break
        raise InputError(f"a watchlist holds at most {MAX_ITEMS} items", "watchlist_full")

    async def _recounted(self, counter: dict[str, Any], now: datetime) -> bool:
        """A full counter quiet for RECOUNT_AFTER that counts more than is stored is set
        to what is stored (a process died holding a place); True if it was."""
        if counter["at"].replace(tzinfo=UTC) > now - RECOUNT_AFTER:
            return False
        stored = await self._watchlists.count_documents({"user_id": counter["_id"]})
        if stored >= counter["n"]:
            return False
        fixed = await self._db[COUNTS_COLLECTION].update_one(
            {"_id": counter["_id"], "n": counter["n"], "at": counter["at"]},
            {"$set": {"n": stored, "at": now}},
        )
        return bool(fixed.modified_count)

    async def _give_back(self, user_id: str) -> None:
        await self._db[COUNTS_COLLECTION].update_one(
            {"_id": user_id, "n": {"$gt": 0}},
            {"$inc": {"n": -1}, "$set": {"at": datetime.now(UTC)}},
        )

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
        await self._give_back(user_id)
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
            try:
                await self._take_place(user_id)
            except InputError:
                await self._db[UNDO_COLLECTION].insert_one(kept)  # still undoable later
                raise
            fields = {k: v for k, v in watch.items() if k not in key}
            await self._write_in_place(user_id, key, {"$setOnInsert": fields})
        return str(watch["item_name"])


class WatchItem(msgspec.Struct, kw_only=True):
    """What the API and pages show of a watch: its name and rules, not what it remembers
    (watching answers with the target and the rules that were given)."""

    item_name: str
    target_price_in_cents: Target
    min_discount_percent: Discount | msgspec.UnsetType = msgspec.UNSET
    realert_hours: Realert | msgspec.UnsetType = msgspec.UNSET


class Watchlist(msgspec.Struct):
    """A shopper's watched items, in the order they were added."""

    items: list[WatchItem]


def _shown(watch: dict[str, Any]) -> dict[str, Any]:
    """A stored watch as a WatchItem (a plain dict: the handlers add its item key)."""
    rules = {k: watch.get(k) for k in ALERT_FIELDS}
    return msgspec.structs.asdict(WatchItem(item_name=watch["item_name"], **rules))
