"""The deal rule and the deal check that turns new deals into one notification per user."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import bson
import msgspec
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.synchronous.database import Database

from notifier import validation
from notifier.accounts.preferences import Preferences
from notifier.formatting import money
from notifier.kinds import NotificationType
from notifier.notifications.batch import NewNotification
from notifier.push import subscriptions as push_subscriptions
from notifier.realtime.publishing import NotificationService
from notifier.shopping import alerts
from notifier.shopping.history import WINDOW_DAYS, lowest_before
from notifier.storage.batches import IN_BATCH, find_in

log = logging.getLogger(__name__)

CHUNK_USERS = 1000  # users per chunk: one task, one batch of writes
LIVE_CHUNK_USERS = 100  # users per chunk of those online: small, so they go out at once
ONLINE_LOOKUP = 1000  # watchers whose presence is asked in one round trip
MAX_ROUNDS = 3  # a user whose notification was refused is recomputed at most this often
# What stored data gone bad raises when a check reads it: the item fails, not the check.
BAD_DATA = (KeyError, TypeError, ValueError, AttributeError, bson.errors.BSONError)


def deal_key(price: dict[str, Any]) -> str:
    """What a user is told about once: (item, store, price, valid_until)."""
    until = price.get("valid_until")
    until_text = until.replace(tzinfo=UTC).isoformat() if until else ""
    return f"{price['item_key']}|{price['store_id']}|{price['price_in_cents']}|{until_text}"


class Deal(msgspec.Struct, kw_only=True):
    """One deal in a deal notification's data (the seed's fields, kept as they were)."""

    item_name: str
    best_price_in_cents: validation.Cents
    regular_price_in_cents: validation.Cents | msgspec.UnsetType = msgspec.UNSET  # newer ones
    store_name: str
    store_id: str


class DealDetail(msgspec.Struct, kw_only=True):
    """What makes a deal worth reading, in the order of the deals."""

    item_key: Annotated[str, msgspec.Meta(description="the item's key (its page is /items/<key>)")]
    discount_percent: Annotated[
        int, msgspec.Meta(ge=0, le=100, description="below the regular price, in whole percent")
    ]
    lowest_in_days: Annotated[
        int | None,
        msgspec.Meta(description="90 when this is the lowest price of the last 90 days"),
    ]


class DealData(msgspec.Struct, kw_only=True):
    """A deal-notification's data, as the deal check stores it."""

    deals: list[Deal]
    deal_details: Annotated[
        list[DealDetail] | msgspec.UnsetType,
        msgspec.Meta(
            description="per deal, in the order of `deals` (absent on notifications stored "
            "before it)"
        ),
    ] = msgspec.UNSET
    user_id: str
    message: str
    headline: Annotated[
        str | msgspec.UnsetType,
        msgspec.Meta(
            description="what the deal is, e.g. 'Milk 1L $2.56 at Value Foods, 27% off' or "
            "'3 deals: Milk 1L, Bananas and Coffee beans 500g' (absent on older ones)"
        ),
    ] = msgspec.UNSET


def deal_message(count: int) -> str:
    """The seed's wording for a deal notification (kept in `data.message`)."""
    return f"You have {count} new deal(s) on your watched items!"


def discount_percent(price_in_cents: int, regular_price_in_cents: int) -> int:
    """How much below the regular price, in whole percent (0 when not below)."""
    if regular_price_in_cents <= 0 or price_in_cents >= regular_price_in_cents:
        return 0
    return round(100 * (regular_price_in_cents - price_in_cents) / regular_price_in_cents)


def _names(names: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def deal_headline(deals: list[dict[str, Any]]) -> str:
    """What the deal is, in one line: the toast, the history row and the email subject.

    One deal: "Milk 1L $2.56 at Value Foods, 27% off, lowest in 90 days". Several:
    "3 deals: Milk 1L, Bananas and Coffee beans 500g" (the first three, then "and 2 more").
    """
    if len(deals) == 1:
        d = deals[0]
        parts = [f"{d['item_name']} {money(d['best_price_in_cents'])} at {d['store_name']}"]
        if d.get("discount_percent"):
            parts.append(f"{d['discount_percent']}% off")
        if d.get("lowest_in_days"):
            parts.append(f"lowest in {d['lowest_in_days']} days")
        return ", ".join(parts)
    names = [d["item_name"] for d in deals]
    shown = names if len(names) <= 3 else [*names[:3], f"{len(names) - 3} more"]
    headline = f"{len(deals)} deals: {_names(shown)}"
    lowest = [d for d in deals if d.get("lowest_in_days")]
    if len(lowest) == 1:
        headline += f" ({lowest[0]['item_name']} lowest in {lowest[0]['lowest_in_days']} days)"
    elif lowest:
        headline += f" ({len(lowest)} lowest in {lowest[0]['lowest_in_days']} days)"
    return headline


@dataclass
class DealCheckResult:
    """What one run of the deal check (or one chunk of it) found and stored."""

    users_notified: int = 0
    deals_found: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item key -> why it was skipped
    # What the watches are to remember (watch id, update), when left to the caller to write.
    memory: list[Memory] = field(default_factory=list)

    def add(self, other: DealCheckResult) -> None:
        """Count another chunk's results in."""
        self.users_notified += other.users_notified
        self.deals_found += other.deals_found
        self.notifications.extend(other.notifications)
        for key, error in other.failed.items():
            self.failed.setdefault(key, error)

    def summary(self) -> str:
        """One line for a job-complete notification."""
        return f"{self.deals_found} new deal(s) for {self.users_notified} user(s)"


Pair = tuple[dict[str, Any], dict[str, Any]]  # (watch, best price)
Memory = tuple[Any, dict[str, Any]]  # (a watch's _id, the update that remembers a deal)


def memory_to_text(memory: list[Memory]) -> str:
    """Watch updates as a task argument (BSON keeps their ids and dates as they are)."""
    return base64.b64encode(bson.encode({"w": [[i, u] for i, u in memory]})).decode()


def memory_from_text(text: str) -> list[Memory]:
    """The watch updates `memory_to_text` wrote."""
    return [(i, u) for i, u in bson.decode(base64.b64decode(text))["w"]]


class DealCheck:
    """Finds, per user, watched items whose best active price is a deal they were not told of.

    A check is split into chunks of users (`chunks`), each checked and written in one
    batch (`run_chunk`), so any number of workers can share one. There is no lock: a
    user is told of a deal once because storage refuses a second notification carrying
    the same deal key (the unique told-once index), whoever writes it.
    """

    def __init__(
        self,
        db: Database[Any],
        notifications: NotificationService,
        chunk_users: int = CHUNK_USERS,
        window_days: int = WINDOW_DAYS,
        memory_days: int = alerts.MEMORY_DAYS,
    ) -> None:
        self._db = db
        self._notifications = notifications
        self.chunk_users = chunk_users
        self.window_days = window_days  # PRICE_WINDOW_DAYS: "lowest in N days"
        self.memory_days = memory_days  # ALERT_MEMORY_DAYS: what a deal without target beats

    def run(self, item_keys: Iterable[str] | None = None) -> DealCheckResult:
        """Check every watched item (or only `item_keys`) here, chunk after chunk; idempotent."""
        items = None if item_keys is None else sorted(set(item_keys))
        result = DealCheckResult()
        for users in self.rest_chunks(items):
            result.add(self.run_chunk(users, items))
        return result

    def chunks(
        self,
        item_keys: list[str] | None = None,
        online: Callable[[list[str]], set[str]] | None = None,
    ) -> Iterator[list[str]]:
        """The watchers of these items (or of anything), chunk by chunk: live users first.

        With `online` (which of these users have a socket open anywhere), the users online
        come first, in chunks of LIVE_CHUNK_USERS handed out as they are found; then
        everyone else, in user order. Streams the watches through an index (twice with
        `online`), so memory stays about a chunk (and the online watchers) whatever the
        count. (When every user online can be listed, `watching` finds the live ones
        without reading any other watcher: see tasks/deals.py.)
        """
        if online is None:
            yield from self.rest_chunks(item_keys)
            return
        live: set[str] = set()
        found: list[str] = []
        for users in _chunked(self._watchers(item_keys), ONLINE_LOOKUP):
            here = online(users)
            live |= here
            found += [u for u in users if u in here]
            while len(found) >= LIVE_CHUNK_USERS:
                yield found[:LIVE_CHUNK_USERS]
                found = found[LIVE_CHUNK_USERS:]
        if found:
            yield found
        yield from self.rest_chunks(item_keys, live)

    def live_chunks(self, user_ids: list[str], item_keys: list[str] | None) -> list[list[str]]:
        """Those of these users (the ones online) who watch these items (or anything), in
        chunks of LIVE_CHUNK_USERS: read from their own watches, one read per 100 users."""
        items = None if item_keys is None else {"item_key": {"$in": item_keys}}
        projection = {"user_id": 1, "_id": 0}
        watches = find_in(self._db.watchlists, "user_id", user_ids, items, projection)
        return list(_chunked(sorted({w["user_id"] for w in watches}), LIVE_CHUNK_USERS))

    def rest_chunks(
        self, item_keys: list[str] | None, skip: Collection[str] = ()
    ) -> Iterator[list[str]]:
        """Every watcher of these items (or of anything) not in `skip`, in user order."""
        rest = (u for u in self._watchers(item_keys) if u not in skip)
        yield from _chunked(rest, self.chunk_users)

    def _watchers(self, item_keys: list[str] | None) -> Iterator[str]:
        """Each watcher once, in user order (streamed through the watches' index)."""
        query: dict[str, Any] = {} if item_keys is None else {"item_key": {"$in": item_keys}}
        cursor = self._db.watchlists.find(query, {"user_id": 1, "_id": 0}).sort("user_id", 1)
        last = None
        for watch in cursor:
            if watch["user_id"] != last:
                last = watch["user_id"]
                yield last

    def run_chunk(
        self, user_ids: list[str], item_keys: list[str] | None = None, remember_later: bool = False
    ) -> DealCheckResult:
        """Check these users' watches (of `item_keys`, or all) and notify, in one batch.

        The watches then remember what they were told; with `remember_later` the updates
        are left in the result's `memory` for the caller to write (`remember`) when the
        database is less busy. Lost, they are caught up by the next check (see below).
        """
        now = datetime.now(UTC)
        users = set(user_ids)
        items: dict[str, Any] = {} if item_keys is None else {"item_key": {"$in": item_keys}}
        if len(users) <= IN_BATCH:  # a live chunk: a few users from anywhere in the id range
            watches = list(find_in(self._db.watchlists, "user_id", users, items))
        else:  # a run of consecutive watchers: one range read through the index
            query = {"user_id": {"$gte": min(users), "$lte": max(users)}, **items}
            watches = [w for w in self._db.watchlists.find(query) if w["user_id"] in users]
        failed: dict[str, str] = {}
        best = self._best_prices({w["item_key"] for w in watches}, now, failed)
        prefs, emailed = self._preferences({w["user_id"] for w in watches})
        candidates: dict[str, list[Pair]] = defaultdict(list)
        remember: list[Memory] = []  # what each watch was told, written after the chunk
        for w in watches:
            price = best.get(w["item_key"])
            try:
                if (armed := alerts.rearm(w, price)) is not None:
                    remember.append((w["_id"], armed))
                if price and _wants(w, price, prefs[w["user_id"]], now, self.memory_days):
                    candidates[w["user_id"]].append((w, price))
            except BAD_DATA as e:  # this watch's data: the others are checked
                failed.setdefault(w["item_key"], _reason(e))
        _log_failed(failed)
        pushed = self._push_subscribers({u: prefs[u] for u in candidates})

        # One history read for the chunk: is each candidate price the window's lowest?
        offered = [p for pairs in candidates.values() for _, p in pairs]
        lows = lowest_before(
            self._db,
            {p["item_key"] for p in offered},
            {p["price_id"] for p in offered if p.get("price_id")},
            now,
            self.window_days,
        )
        result = DealCheckResult(failed=failed)
        told: dict[str, set[str]] = defaultdict(set)
        for _ in range(MAX_ROUNDS):
            wanted = [
                notification
                for user_id, pairs in sorted(candidates.items())
                if (
                    notification := _notification(
                        user_id, pairs, told[user_id], lows, emailed, self.window_days
                    )
                )
            ]
            remember += self._remember(candidates, told, now)  # told by an earlier check
            if not wanted:
                break
            wanted = [replace(n, push_pending=True) if n.user_id in pushed else n for n in wanted]
            stored = self._notifications.notify_many(wanted)
            for doc in stored.docs:
                result.users_notified += 1
                result.deals_found += len(doc["deal_keys"])
                result.notifications.append(doc)
            remember += self._remember(
                {d["user_id"]: candidates[d["user_id"]] for d in stored.docs},
                {d["user_id"]: set(d["deal_keys"]) for d in stored.docs},
                now,
            )
            # Refused: another check told these users of some of these deals meanwhile.
            # Learn which, and tell them of the rest.
            refused = {n.user_id for n in stored.refused}
            candidates = {u: pairs for u, pairs in candidates.items() if u in refused}
            told = self._already_told(candidates)
        # After the notifications: a crash in between is caught up next time (the told
        # deals are read back from the notifications, `_already_told`).
        if remember_later:
            result.memory = remember
        else:
            self.remember(remember)
        return result

    def remember(self, memory: list[Memory]) -> None:
        """Write what the watches remember (one unordered bulk write)."""
        if memory:
            ops = [UpdateOne({"_id": watch_id}, update) for watch_id, update in memory]
            self._db.watchlists.bulk_write(ops, ordered=False)

    def _remember(
        self, pairs: dict[str, list[Pair]], told: dict[str, set[str]], now: datetime
    ) -> list[Memory]:
        """The watch updates that remember which of these deals each user was told of."""
        return [
            (w["_id"], alerts.told(w, p, now))
            for user_id, user_pairs in pairs.items()
            for w, p in user_pairs
            if deal_key(p) in told.get(user_id, ())
        ]

    def _preferences(self, user_ids: set[str]) -> tuple[dict[str, Preferences], set[str]]:
        """Each user's preferences, and who may get a deal's own email (one query per 100).

        Only users with an address whose mode emails single deals (offline, always) leave
        their notification pending an email decision: nobody has to clear the others'.
        """
        ids = [ObjectId(u) for u in user_ids if ObjectId.is_valid(u)]
        users = list(find_in(self._db.users, "_id", ids, None, {"preferences": 1, "email": 1}))
        found = {str(u["_id"]): Preferences.from_doc(u) for u in users}
        emailed = {
            str(u["_id"])
            for u in users
            if u.get("email") and found[str(u["_id"])].email_mode in ("offline", "always")
        }
        return {uid: found.get(uid, Preferences()) for uid in user_ids}, emailed

    def _push_subscribers(self, prefs: dict[str, Preferences]) -> set[str]:
        """Whose deals wait for a push decision: a subscribed browser, deal pushes wanted.

        Asked of the users with a deal only (one query per 100 of them).
        """
        wanting = [u for u, p in prefs.items() if p.push_deals]
        subs = self._db[push_subscriptions.COLLECTION]
        return {d["user_id"] for d in find_in(subs, "user_id", wanting, None, {"user_id": 1})}

    def _best_prices(
        self, item_keys: set[str], now: datetime, failed: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        """Per item, the lowest active price across stores (ties: store id).

        A price whose stored data cannot make a notification puts its item in `failed`
        (with the reason) instead: that item is skipped, every other is checked.
        """
        best: dict[str, dict[str, Any]] = {}
        active = {"$or": [{"valid_until": None}, {"valid_until": {"$gt": now}}]}
        for p in find_in(self._db.prices, "item_key", item_keys, active):
            key = str(p["item_key"])  # what the query matched on
            if key in failed:
                continue
            try:
                _vet(p)
            except BAD_DATA as e:
                failed[key] = _reason(e)
                best.pop(key, None)
                continue
            current = best.get(key)
            if current is None or (p["price_in_cents"], p["store_id"]) < (
                current["price_in_cents"],
                current["store_id"],
            ):
                best[key] = p
        return best

    def _already_told(self, candidates: dict[str, list[Pair]]) -> dict[str, set[str]]:
        """Per user, which of the candidate deal keys an earlier notification carried."""
        told: dict[str, set[str]] = defaultdict(set)
        keys = sorted({deal_key(p) for pairs in candidates.values() for _, p in pairs})
        if not keys:
            return told
        for doc in find_in(
            self._db.notifications,
            "user_id",
            candidates,
            {"deal_keys": {"$in": keys}},
            {"user_id": 1, "deal_keys": 1},
        ):
            told[doc["user_id"]].update(doc["deal_keys"])
        return told


def _vet(price: dict[str, Any]) -> None:
    """Raise if this stored price cannot make a deal notification (bad types, unstorable text).

    Checked per price so one bad document fails its item only: the fields a notification
    copies must have their types, and encode as BSON (a lone surrogate does not).
    """
    for name in ("price_in_cents", "regular_price_in_cents"):
        value = price[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} is {type(value).__name__}, not a whole number of cents")
    for name in ("item_key", "item_name", "store_id", "store_name"):
        if not isinstance(price[name], str):
            raise TypeError(f"{name} is {type(price[name]).__name__}, not text")
    bson.encode({"deal": deal_key(price), "item": price["item_name"], "store": price["store_name"]})


def _wants(
    watch: dict[str, Any],
    price: dict[str, Any],
    prefs: Preferences,
    now: datetime,
    memory_days: int,
) -> bool:
    """Whether this price is news for this watch (its rules) and enough for the user."""
    cents, regular = price["price_in_cents"], price["regular_price_in_cents"]
    if not isinstance(watch["item_name"], str):
        raise TypeError("the watch's item_name is not text")
    return prefs.deal_is_enough(cents, regular) and alerts.is_news(watch, price, now, memory_days)


def _reason(error: BaseException) -> str:
    """A failure in a few words, for the log and the admin page."""
    return f"{type(error).__name__}: {error}"[:200]


def _log_failed(failed: dict[str, str]) -> None:
    for key, error in sorted(failed.items()):
        log.warning("deal check skipped item %r: %s", key, error)


def _chunked(users: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for user_id in users:
        chunk.append(user_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _notification(
    user_id: str,
    pairs: list[Pair],
    told: set[str],
    lows: dict[str, int],
    emailed: set[str],
    window_days: int = WINDOW_DAYS,
) -> NewNotification | None:
    """The one notification telling a user of their deals not told before, if any.

    `lows` holds each item's lowest other price of the last `window_days`; `emailed`, the users
    whose deals wait for an email decision.
    """
    new = sorted(
        ((w, p) for w, p in pairs if deal_key(p) not in told), key=lambda pair: pair[0]["item_key"]
    )
    if not new:
        return None
    keys = [deal_key(p) for _, p in new]
    deals = [
        Deal(
            item_name=w["item_name"],
            best_price_in_cents=p["price_in_cents"],
            regular_price_in_cents=p["regular_price_in_cents"],
            store_name=p["store_name"],
            store_id=p["store_id"],
        )
        for w, p in new
    ]
    # What makes each deal worth reading, in the order of `deals` (whose entries keep the
    # seed's fields only, so clients that compare them whole are not broken).
    details = [
        DealDetail(
            item_key=w["item_key"],
            discount_percent=discount_percent(p["price_in_cents"], p["regular_price_in_cents"]),
            lowest_in_days=window_days
            if w["item_key"] in lows and p["price_in_cents"] <= lows[w["item_key"]]
            else None,
        )
        for w, p in new
    ]
    plain = msgspec.to_builtins((deals, details))
    data = msgspec.to_builtins(
        DealData(
            deals=deals,
            deal_details=details,
            user_id=user_id,
            message=deal_message(len(new)),
            headline=deal_headline([{**d, **x} for d, x in zip(*plain, strict=True)]),
        )
    )
    dedupe = "deals:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return NewNotification(
        user_id, NotificationType.DEAL, data, dedupe, keys, email_pending=user_id in emailed
    )
