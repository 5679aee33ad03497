"""Deciding and sending pushes (workers, synchronous clients).

A deal notification for a user with a subscription is stored with `push_pending`. After
PUSH_ACK_WAIT a decision round (the deal check chunk's delayed task, or beat's sweep)
takes the round's notifications in bulk: per user, those no page acknowledged (`acked_seq`
on the user's state document) and nobody read make ONE push, for the newest of them,
when the user wants deal pushes and is outside their quiet hours; then the mark is
cleared. Plans are documents in `pushes` with deterministic ids (a second decision plans
nothing new), sent by a task that claims the document first. A push goes to each of the
user's subscriptions; a 404 or 410 deletes that subscription, other failures are retried
with backoff by the task (those already delivered are not sent again). Emails never wait
for any of this: their decision at EMAIL_ACK_WAIT reads the same `acked_seq`, which the
service worker raises when it shows the push.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.synchronous.database import Database
from pywebpush import WebPushException, webpush

from notifier import vapid
from notifier.accounts.preferences import Preferences
from notifier.notifications import decisions
from notifier.notifications import state as user_state
from notifier.notifications.decisions import AfterAckWait
from notifier.push import endpoints
from notifier.push.acks import ack_token
from notifier.push.payloads import announcement_payload, deal_payload
from notifier.push.subscriptions import COLLECTION as SUBSCRIPTIONS
from notifier.push.subscriptions import Subscription
from notifier.settings import Settings
from notifier.storage.batches import find_in, insert_new, unset_each

log = logging.getLogger(__name__)

COLLECTION = "pushes"
TTL = 86400  # seconds a push service keeps a push for a browser that is offline
URGENCY = "high"
ANNOUNCE_BATCH = 500  # users whose announcement pushes one task plans
LEASE = 120.0  # seconds: a claim older than this, by another task, is taken over


class PushFailed(Exception):
    """Some subscriptions could not be reached this time; the task retries them."""


class PushService(AfterAckWait):
    """Deciding deal pushes, planning announcement pushes, and sending them."""

    PENDING = "push_pending"

    def __init__(
        self,
        settings: Settings,
        db: Database[Any],
        transport: endpoints.PinnedTransport | None = None,
    ) -> None:
        self._settings = settings
        self._db = db
        self._transport = transport or endpoints.PinnedTransport(
            allow_loopback=not settings.production
        )
        key = settings.vapid_private_key
        self._signer = vapid.signer(key) if key is not None else None

    # Deciding deal pushes -----------------------------------------------------------------

    def ack_wait(self) -> float:
        return self._settings.push_ack_wait

    def decide(self, notifications: list[dict[str, Any]]) -> list[str]:
        """Plan the pushes these deal notifications call for, now; the push ids to send.

        Plans are inserted before the marks are cleared, and have deterministic ids: a
        worker killed in between leaves the marks for the sweep, which plans nothing new.
        """
        if not notifications:
            return []
        planned = insert_new(self._db[COLLECTION], self._deal_plans(notifications))
        unset_each(self._db.notifications, [n["_id"] for n in notifications], "push_pending")
        return [p["_id"] for p in planned]

    def _deal_plans(self, notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._signer is None:
            return []  # Web Push is off: the marks are only cleared
        user_ids = {n["user_id"] for n in notifications}
        subscribed = {
            d["user_id"]
            for d in find_in(self._db[SUBSCRIPTIONS], "user_id", user_ids, None, {"user_id": 1})
        }
        users = self._users(subscribed)
        acked = {
            d["_id"]: int(d.get("acked_seq", 0))
            for d in find_in(
                self._db[user_state.COLLECTION], "_id", subscribed, None, {"acked_seq": 1}
            )
        }
        now = datetime.now(UTC)
        unseen: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for n in notifications:
            prefs = users.get(n["user_id"])
            if prefs is None or not prefs.push_deals or prefs.quiet_until(now):
                continue
            if not n.get("read") and n["seq"] > acked.get(n["user_id"], 0):
                unseen[n["user_id"]].append(n)
        return [self._deal_plan(uid, notes, now) for uid, notes in sorted(unseen.items())]

    def _users(self, user_ids: set[str]) -> dict[str, Preferences]:
        oids = [ObjectId(u) for u in user_ids if ObjectId.is_valid(u)]
        found = find_in(self._db.users, "_id", oids, None, {"preferences": 1})
        return {str(u["_id"]): Preferences.from_doc(u) for u in found}

    def _deal_plan(
        self, user_id: str, notes: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any]:
        """One push for a round's unseen deals of one user: the newest, saying how many."""
        newest = max(notes, key=lambda n: n["seq"])
        token = ack_token(self._settings.jwt_secret, user_id, newest["seq"], now.timestamp())
        return {
            "_id": f"push-{newest['_id']}",
            "kind": "deal",
            "user_id": user_id,
            "seq": newest["seq"],
            "notification_ids": sorted(n["_id"] for n in notes),
            "payload": deal_payload(self._settings.base_url, newest, len(notes), token),
            "status": "pending",
            "done": [],
            "created_at": now,
        }

    # Announcements -------------------------------------------------------------------------

    def plan_announcement(
        self, announcement_id: str, after_user: str | None = None
    ) -> tuple[list[str], str | None]:
        """Plan an announcement's pushes for the next ANNOUNCE_BATCH subscribed users.

        Returns the push ids and the user to continue after (None when done). Users who
        want announcement pushes and are outside their quiet hours get one each; the
        service worker shows it unless a visible tab of the app already shows it live.
        """
        if self._signer is None or not ObjectId.is_valid(announcement_id):
            return [], None
        announcement = self._db.announcements.find_one({"_id": ObjectId(announcement_id)})
        if announcement is None:
            return [], None
        query = {"user_id": {"$gt": after_user}} if after_user else {}
        cursor = self._db[SUBSCRIPTIONS].find(query, {"user_id": 1}).sort("user_id", ASCENDING)
        batch: list[str] = []
        for doc in cursor:
            if batch and batch[-1] == doc["user_id"]:
                continue
            if len(batch) == ANNOUNCE_BATCH:
                break
            batch.append(doc["user_id"])
        more = batch[-1] if len(batch) == ANNOUNCE_BATCH else None
        cursor.close()
        now = datetime.now(UTC)
        payload = announcement_payload(self._settings.base_url, announcement)
        plans = [
            {
                "_id": f"push-announcement-{announcement_id}-{user_id}",
                "kind": "announcement",
                "user_id": user_id,
                "payload": payload,
                "status": "pending",
                "done": [],
                "created_at": now,
            }
            for user_id, prefs in sorted(self._users(set(batch)).items())
            if prefs.push_announcements and not prefs.quiet_until(now)
        ]
        return [p["_id"] for p in insert_new(self._db[COLLECTION], plans)], more

    # Sending -------------------------------------------------------------------------------

    def send(self, push_id: str, task_id: str, last_try: bool = False) -> str:
        """Claim a planned push and send it to each of the user's subscriptions.

        Raises PushFailed when some could not be reached (the task retries: those done
        are not sent again), unless this is the last try. Returns what happened.
        """
        claim = decisions.claim(self._db[COLLECTION], push_id, task_id, LEASE)
        if claim is None:
            return "skipped: sent, or being sent by another task"
        if self._signer is None:
            return self._finish(push_id, "cancelled")
        if claim["kind"] == "deal" and self._seen(claim):
            return self._finish(push_id, "seen")  # acknowledged or read since the decision
        failures, rejected = [], []
        for sub in self._subscriptions(claim["user_id"]):
            if sub["endpoint"] in claim["done"]:
                continue
            outcome = self._post(sub, claim["payload"])
            if outcome == "sent":
                self._db[COLLECTION].update_one(
                    {"_id": push_id}, {"$addToSet": {"done": sub["endpoint"]}}
                )
            elif outcome in ("gone", "refused"):
                self._db[SUBSCRIPTIONS].delete_one({"_id": sub["_id"]})
            elif outcome.startswith("rejected"):
                rejected.append(outcome)  # asking again would get the same answer
            else:
                failures.append(outcome)
        if rejected:
            log.warning("push %s rejected: %s", push_id, ", ".join(rejected))
        if failures and not last_try:
            raise PushFailed(f"push {push_id}: {len(failures)} failed ({', '.join(failures)})")
        return self._finish(push_id, "failed" if failures or rejected else "sent")

    def _finish(self, push_id: str, status: str) -> str:
        self._db[COLLECTION].update_one(
            {"_id": push_id}, {"$set": {"status": status, "finished_at": datetime.now(UTC)}}
        )
        return status

    def _seen(self, push: dict[str, Any]) -> bool:
        state = self._db[user_state.COLLECTION].find_one({"_id": push["user_id"]}, {"acked_seq": 1})
        if int((state or {}).get("acked_seq", 0)) >= push["seq"]:
            return True
        unread = self._db.notifications.count_documents(
            {"_id": {"$in": push["notification_ids"]}, "read": False}, limit=1
        )
        return unread == 0

    def _subscriptions(self, user_id: str) -> list[dict[str, Any]]:
        """The user's subscriptions, less those registered under revoked tokens (deleted)."""
        subs = list(self._db[SUBSCRIPTIONS].find({"user_id": user_id}))
        user = (
            self._db.users.find_one({"_id": ObjectId(user_id)}, {"token_version": 1})
            if ObjectId.is_valid(user_id)
            else None
        )
        current = int(user.get("token_version", 0)) if user else None
        revoked = [
            s["_id"] for s in subs if current is None or int(s.get("token_version", 0)) < current
        ]
        if revoked:  # a logout since: that browser no longer speaks for the user
            self._db[SUBSCRIPTIONS].delete_many({"_id": {"$in": revoked}})
        return [s for s in subs if s["_id"] not in revoked]

    def _post(self, sub: dict[str, Any], payload: dict[str, Any]) -> str:
        """Encrypt (aes128gcm), sign (VAPID) and POST one push: sent, gone, refused or why."""
        try:
            webpush(
                Subscription.from_doc(sub).info(),
                json.dumps(payload, separators=(",", ":")),
                vapid_private_key=self._signer,
                vapid_claims={"sub": self._settings.vapid_subject},
                ttl=TTL,
                headers={"Urgency": URGENCY},
                requests_session=cast(Any, self._transport),
            )
        except WebPushException as e:
            status = e.status_code
            if status in (404, 410):
                return "gone"  # the browser unsubscribed, or the push service forgot it
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                return f"rejected: HTTP {status}"
            return f"HTTP {status}" if status else "no answer"
        except endpoints.UnsafeEndpoint as e:
            log.warning("push subscription %s refused at send time: %s", sub["_id"], e.message)
            return "refused"
        except OSError as e:  # TransportError among them: unreachable, or too slow
            return f"{type(e).__name__}: {e}"
        return "sent"
