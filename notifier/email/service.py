"""Email: composing deal emails and digests, one-time unsubscribe links, and sending.

Emails are planned as documents in the `emails` collection (one per user and decision
round, named after its first notification; one per user and digest window: the _id makes
planning idempotent; a deal email waiting for EMAIL_MIN_INTERVAL takes in later deals)
and sent by a task that first claims the document, so a duplicated task sends nothing
and a retried one (same task id) carries on where it was killed.

When a deal is emailed (mode `offline`): when no page acknowledged it (the `ack` socket
message, kept as the user's `acked_seq`) and nobody read it within EMAIL_ACK_WAIT seconds
of it being stored. Presence is not asked: a crashed web process, a half-open socket or a
background tab would count as "online" although nobody saw the deal. Deal notifications
carry `email_pending` until decided; beat's sweep and a per-chunk delayed task decide them.
"""

from __future__ import annotations

import base64
import email.policy
import hashlib
import hmac
import json
import os
import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import redis
from bson import ObjectId
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError
from pymongo.synchronous.database import Database

from notifier import validation
from notifier.accounts.preferences import DIGEST_PERIODS, Preferences
from notifier.errors import InvalidLink
from notifier.formatting import money
from notifier.kinds import NotificationType
from notifier.notifications import decisions
from notifier.notifications import state as user_state
from notifier.notifications.decisions import AfterAckWait
from notifier.notifications.store import to_json
from notifier.settings import Settings
from notifier.shopping.deals import deal_headline
from notifier.storage.batches import find_in, insert_new, unset_each

TEMPLATES = Path(__file__).with_name("templates")
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998)


def unsubscribe_token(secret: str, user_id: str, email_id: str) -> str:
    """A signed, one-time token naming the user and the email it came in."""
    payload = _b64(json.dumps({"u": user_id, "e": email_id}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str]:
    """(user_id, email_id) from a token; InvalidLink when it was not made by us."""
    payload, _, signature = token.partition(".")
    # compare_digest refuses non-ASCII str (a TypeError, the 500 of issue 23 #6): compare
    # bytes, and a token that is not ASCII is simply not one of ours.
    if not payload or not token.isascii():
        raise InvalidLink("the link is not valid")
    if not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise InvalidLink("the link is not valid")
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data["u"]), str(data["e"])
    except (ValueError, KeyError, TypeError):
        raise InvalidLink("the link is not valid") from None


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(("unsubscribe:" + secret).encode(), payload.encode(), hashlib.sha256)
    return _b64(digest.digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["money"] = money


@dataclass(frozen=True)
class Outgoing:
    """One email ready to send."""

    email_id: str
    message: EmailMessage


def compose(
    settings: Settings,
    email: dict[str, Any],
    user: dict[str, Any],
    notifications: list[dict[str, Any]],
) -> Outgoing:
    """Text and HTML parts, with one-click unsubscribe (RFC 8058) headers."""
    token = unsubscribe_token(settings.jwt_secret, str(user["_id"]), email["_id"])
    unsubscribe_url = f"{settings.base_url}/unsubscribe?{urllib.parse.urlencode({'token': token})}"
    mode = (user.get("preferences") or {}).get("email_mode", "offline")
    context = {
        "username": user["username"],
        "notifications": notifications,
        "base_url": settings.base_url,
        "unsubscribe_url": unsubscribe_url,
        "mode": mode,
    }
    deals = sum(len(n["data"].get("deals", [])) for n in notifications)
    # Long header lines stay whole (SMTP allows 998): a folded List-Unsubscribe would be
    # RFC 2047-encoded, which mail clients do not read as a URL.
    msg = EmailMessage(policy=SMTP_POLICY)
    if email["kind"] == "digest":
        subject = f"Your {mode} deal digest: {deals} deal(s)"
    elif len(notifications) == 1:
        data = notifications[0]["data"]
        subject = data.get("headline") or data["message"]  # what the deal is
    else:  # several notifications waited for the interval: "3 deals: A, B and C"
        subject = deal_headline(_latest_per_item(notifications))
    # Names are clean where they enter (validation.name); data stored before that rule
    # must not put NUL, ESC, CR/LF or an override in a header either.
    msg["Subject"] = validation.printable(subject)
    msg["From"] = settings.email_from
    msg["To"] = user["email"]
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=email["_id"], domain="notifier")
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(_env.get_template("deal.txt").render(context))
    msg.add_alternative(_env.get_template("deal.html").render(context), subtype="html")
    return Outgoing(email["_id"], msg)


def deliver(settings: Settings, outgoing: Outgoing) -> None:
    """Send by SMTP_URL, or (without one) write an .eml file under var/outbox/."""
    if settings.smtp_url:
        _smtp_send(settings.smtp_url, outgoing.message)
        return
    outbox = settings.var_dir / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / f"{outgoing.email_id}.eml"
    partial = final.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(bytes(outgoing.message))
    partial.replace(final)  # atomic: the outbox never shows half an email


def _smtp_send(url: str, message: EmailMessage) -> None:
    """smtp://[user:password@]host[:port] (STARTTLS when offered) or smtps:// (TLS)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if parts.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(host, parts.port or 465, timeout=30, context=context)
    elif parts.scheme == "smtp":
        smtp = smtplib.SMTP(host, parts.port or 25, timeout=30)
    else:
        raise ValueError("SMTP_URL must start with smtp:// or smtps://")
    with smtp:
        smtp.ehlo()
        if parts.scheme == "smtp" and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if parts.username:
            smtp.login(
                urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
            )
        smtp.send_message(message)


LEASE = 300.0  # seconds: a claim older than this, by another task, is taken over


class EmailService(AfterAckWait):
    """Planning and sending emails (workers, synchronous clients)."""

    PENDING = "email_pending"

    def __init__(self, settings: Settings, db: Database[Any], redis_client: redis.Redis) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis_client

    def plan_for_deal(self, notification: dict[str, Any]) -> str | None:
        """Decide a deal notification's email now; its id when it is due now, else None."""
        due = self.decide([notification])
        return due[0] if due else None

    def plan_for_deals(self, notifications: list[dict[str, Any]]) -> list[str]:
        """What a deal check decides at once for its batch; the email ids due now.

        `always` is emailed at once, and `never`/digest modes need no email of their own;
        `offline` stays pending until EMAIL_ACK_WAIT has passed (see AfterAckWait.decide_due).
        """
        users = self._users(notifications)
        settled = [n for n in notifications if _mode(users.get(n["user_id"])) != "offline"]
        return self._decide(settled, users)

    def ack_wait(self) -> float:
        return self._settings.email_ack_wait

    def decide(self, notifications: list[dict[str, Any]]) -> list[str]:
        """Plan the emails these deal notifications call for, now; the ids due now.

        In mode `offline` a notification is emailed unless a page acknowledged it (its seq
        is at or below the user's acked_seq) or it was read. Plans have deterministic ids,
        and the pending mark is cleared only after them, so a worker killed in between
        leaves it for the sweep and a second decision plans nothing new.
        """
        return self._decide(notifications, self._users(notifications))

    def _users(self, notifications: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        ids = [ObjectId(n["user_id"]) for n in notifications if ObjectId.is_valid(n["user_id"])]
        return {str(u["_id"]): u for u in find_in(self._db.users, "_id", ids)}

    def _decide(
        self, notifications: list[dict[str, Any]], users: dict[str, dict[str, Any]]
    ) -> list[str]:
        if not notifications:
            return []
        offline = {
            n["user_id"] for n in notifications if _mode(users.get(n["user_id"])) == "offline"
        }
        acked = {
            d["_id"]: int(d.get("acked_seq", 0))
            for d in find_in(
                self._db[user_state.COLLECTION], "_id", offline, None, {"acked_seq": 1}
            )
        }
        now = datetime.now(UTC)
        wanted: dict[str, list[dict[str, Any]]] = {}
        for n in sorted(notifications, key=lambda n: n["seq"]):
            user = users.get(n["user_id"])
            if user and _wants_deal_email(
                user,
                Preferences.from_doc(user),
                seen=n["read"] or n["seq"] <= acked.get(n["user_id"], 0),
            ):
                wanted.setdefault(n["user_id"], []).append(n)
        planned = self._plan_deal_emails(wanted, users, now)
        unset_each(self._db.notifications, [n["_id"] for n in notifications], "email_pending")
        return [p["_id"] for p in planned if p["send_after"] <= now]

    def _plan_deal_emails(
        self,
        wanted: dict[str, list[dict[str, Any]]],
        users: dict[str, dict[str, Any]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """One email per user listing these deals, at most one per EMAIL_MIN_INTERVAL.

        Deals that come while a user's email is still waiting for its time join it (never
        dropped); otherwise a new one is planned for when the interval since the last one
        is over (and quiet hours, if any, have passed). Two reads and a write or two for
        the whole round, plus one update per user whose email was waiting.
        """
        if not wanted:
            return []
        waiting = {
            e["user_id"]: e["_id"]
            for e in find_in(
                self._db.emails,
                "user_id",
                wanted,
                {"kind": "deal", "status": "pending"},
                {"user_id": 1},
            )
        }
        for user_id, email_id in waiting.items():
            joined = self._db.emails.update_one(
                {"_id": email_id, "status": "pending"},  # not if a sender claimed it meanwhile
                {"$addToSet": {"notification_ids": {"$each": [n["_id"] for n in wanted[user_id]]}}},
            )
            if not joined.matched_count:
                del waiting[user_id]
        fresh = [u for u in wanted if u not in waiting]
        last = {
            d["_id"]: d.get("deal_email_at")
            for d in find_in(
                self._db[user_state.COLLECTION], "_id", fresh, None, {"deal_email_at": 1}
            )
        }
        interval = timedelta(seconds=self._settings.email_min_interval)
        plans = []
        for user_id in fresh:
            user, notes = users[user_id], wanted[user_id]
            plan = _plan_doc(
                f"deal-{notes[0]['_id']}",
                "deal",
                user,
                Preferences.from_doc(user),
                [n["_id"] for n in notes],
                now,
            )
            if (previous := user_state.utc(last.get(user_id))) is not None:
                plan["send_after"] = max(plan["send_after"], previous + interval)
            plans.append(plan)
        planned = _insert_new(self._db, plans)
        if planned:
            self._db[user_state.COLLECTION].bulk_write(
                [
                    UpdateOne(
                        {"_id": p["user_id"]},
                        {"$max": {"deal_email_at": p["send_after"]}},
                        upsert=True,
                    )
                    for p in planned
                ],
                ordered=False,
            )
        return planned

    def plan_digests(self, now: datetime | None = None) -> list[str]:
        """Plan one digest per user and finished window; returns the ids due now."""
        now = now or datetime.now(UTC)
        due = []
        for user in self._db.users.find({"preferences.email_mode": {"$in": list(DIGEST_PERIODS)}}):
            prefs = Preferences.from_doc(user)
            period = DIGEST_PERIODS[prefs.email_mode]
            end = datetime.fromtimestamp(
                now.timestamp() // period.total_seconds() * period.total_seconds(), UTC
            )
            # What no page acknowledged and nobody read.
            state = self._db[user_state.COLLECTION].find_one({"_id": str(user["_id"])})
            unread = self._db.notifications.find(
                {
                    "user_id": str(user["_id"]),
                    "type": NotificationType.DEAL,
                    "read": False,
                    "seq": {"$gt": int((state or {}).get("acked_seq", 0))},
                    "created_at": {"$gt": end - period, "$lte": end},
                },
                {"_id": 1},
            ).sort("seq", 1)
            ids = [n["_id"] for n in unread]
            if not ids or not user.get("email"):
                continue  # nothing unseen in that window: no digest
            key = f"digest-{user['_id']}-{prefs.email_mode}-{int(end.timestamp())}"
            email_id = self._plan(key, "digest", user, prefs, ids, now)
            if email_id:
                due.append(email_id)
        return due

    def due(self, now: datetime | None = None) -> list[str]:
        """Planned emails whose time has come (held by quiet hours, or whose task was lost)."""
        now = now or datetime.now(UTC)
        query = {"status": "pending", "send_after": {"$lte": now}}
        return [e["_id"] for e in self._db.emails.find(query, {"_id": 1}).limit(500)]

    def send(self, email_id: str, task_id: str) -> str:
        """Claim, compose and send one planned email; returns what happened."""
        now = datetime.now(UTC)
        claim = decisions.claim(
            self._db.emails, email_id, task_id, LEASE, ready={"send_after": {"$lte": now}}
        )
        if claim is None:
            return "skipped: sent, held, or being sent by another task"
        user = self._db.users.find_one({"_id": ObjectId(claim["user_id"])})
        if not user or Preferences.from_doc(user).email_mode == "never" or not user.get("email"):
            self._db.emails.update_one({"_id": email_id}, {"$set": {"status": "cancelled"}})
            return "cancelled: the user no longer wants email"
        notes = list(
            self._db.notifications.find({"_id": {"$in": claim["notification_ids"]}}).sort("seq", 1)
        )
        if claim["kind"] == "deal":
            notes = self._unseen(user, notes)
        if not notes:
            self._db.emails.update_one({"_id": email_id}, {"$set": {"status": "cancelled"}})
            return "cancelled: every deal in it was seen meanwhile"
        deliver(self._settings, compose(self._settings, claim, user, [to_json(n) for n in notes]))
        sent_at = datetime.now(UTC)
        self._db.emails.update_one(
            {"_id": email_id}, {"$set": {"status": "sent", "sent_at": sent_at}}
        )
        if claim["kind"] == "deal":  # the next deal email waits EMAIL_MIN_INTERVAL from here
            self._db[user_state.COLLECTION].update_one(
                {"_id": claim["user_id"]}, {"$set": {"deal_email_at": sent_at}}, upsert=True
            )
        return "sent"

    def _unseen(self, user: dict[str, Any], notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """In mode offline, the deals of an email no page acknowledged and nobody read since
        it was planned (it may have waited EMAIL_MIN_INTERVAL)."""
        if Preferences.from_doc(user).email_mode != "offline":
            return notes
        state = self._db[user_state.COLLECTION].find_one(
            {"_id": str(user["_id"])}, {"acked_seq": 1}
        )
        acked = int((state or {}).get("acked_seq", 0))
        return [n for n in notes if not n["read"] and n["seq"] > acked]

    def _plan(
        self,
        key: str,
        kind: str,
        user: dict[str, Any],
        prefs: Preferences,
        notification_ids: list[Any],
        now: datetime | None = None,
    ) -> str | None:
        now = now or datetime.now(UTC)
        plan = _plan_doc(key, kind, user, prefs, notification_ids, now)
        try:
            self._db.emails.insert_one(plan)
        except DuplicateKeyError:
            return None  # planned before
        return key if plan["send_after"] <= now else None


def _latest_per_item(notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each item's newest deal across these notifications (oldest first), with its details."""
    latest: dict[str, dict[str, Any]] = {}
    for n in notifications:
        details = n["data"].get("deal_details") or []
        for i, d in enumerate(n["data"].get("deals", [])):
            extra = details[i] if i < len(details) else {}
            latest.pop(d["item_name"], None)
            latest[d["item_name"]] = {**d, **extra}
    return list(latest.values())


def _wants_deal_email(user: dict[str, Any], prefs: Preferences, seen: bool) -> bool:
    """Whether a deal notification gets an email of its own (digest modes wait for theirs).

    `seen`: a page acknowledged it or it was read; that spares the email in mode offline.
    """
    if not user.get("email") or prefs.email_mode in ("never", "hourly", "daily"):
        return False
    return not (prefs.email_mode == "offline" and seen)


def _mode(user: dict[str, Any] | None) -> str | None:
    """The user's email mode (None for a user that is gone)."""
    return Preferences.from_doc(user).email_mode if user is not None else None


def _plan_doc(
    key: str,
    kind: str,
    user: dict[str, Any],
    prefs: Preferences,
    notification_ids: list[Any],
    now: datetime,
) -> dict[str, Any]:
    """A planned email: held by quiet hours, else due now."""
    return {
        "_id": key,
        "kind": kind,
        "user_id": str(user["_id"]),
        "status": "pending",
        "notification_ids": notification_ids,
        "created_at": now,
        "send_after": prefs.quiet_until(now) or now,
    }


def _insert_new(db: Database[Any], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the plans not made before (their ids are deterministic); returns those."""
    return insert_new(db.emails, plans)
