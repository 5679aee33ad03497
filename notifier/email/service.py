"""Email: composing deal emails and digests, one-time unsubscribe links, and sending.

Emails are planned as documents in the `emails` collection (one per deal notification,
one per user and digest window: the _id makes planning idempotent) and sent by a task
that first claims the document, so a duplicated task sends nothing and a retried one
(same task id) carries on where it was killed.
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
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.synchronous.database import Database

from notifier.accounts.preferences import DIGEST_PERIODS, Preferences
from notifier.errors import InvalidLink
from notifier.formatting import money
from notifier.notifications.store import to_json
from notifier.realtime.presence import is_online, online_users
from notifier.settings import Settings
from notifier.storage.batches import DUPLICATE_KEY, batched, find_in

TEMPLATES = Path(__file__).with_name("templates")
SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998)


def unsubscribe_token(secret: str, user_id: str, email_id: str) -> str:
    """A signed, one-time token naming the user and the email it came in."""
    payload = _b64(json.dumps({"u": user_id, "e": email_id}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str]:
    """(user_id, email_id) from a token; InvalidLink when it was not made by us."""
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature, _sign(secret, payload)):
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
        msg["Subject"] = f"Your {mode} deal digest: {deals} deal(s)"
    else:
        data = notifications[0]["data"]
        msg["Subject"] = data.get("headline") or data["message"]  # what the deal is
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


class EmailService:
    """Planning and sending emails (workers, synchronous clients)."""

    def __init__(self, settings: Settings, db: Database[Any], redis_client: redis.Redis) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis_client

    def plan_for_deal(self, notification: dict[str, Any]) -> str | None:
        """Plan the email for a deal notification; its id when it is due now, else None."""
        email_id = self._decide(notification)
        self._db.notifications.update_one(
            {"_id": notification["_id"]}, {"$unset": {"email_pending": ""}}
        )
        return email_id

    def undecided(self, older_than: timedelta | None = None) -> list[dict[str, Any]]:
        """Deal notifications whose email was never decided (the task died in between)."""
        wait = (
            older_than
            if older_than is not None
            else timedelta(seconds=self._settings.email_decide_after)
        )
        cutoff = datetime.now(UTC) - wait
        query = {"email_pending": True, "created_at": {"$lt": cutoff}}
        return list(self._db.notifications.find(query).limit(500))

    def plan_for_deals(self, notifications: list[dict[str, Any]]) -> list[str]:
        """Plan the emails of a batch of deal notifications at once; the ids due now.

        One read of the users, one presence round trip, one insert of the plans.
        """
        if not notifications:
            return []
        ids = [ObjectId(n["user_id"]) for n in notifications]
        users = {str(u["_id"]): u for u in find_in(self._db.users, "_id", ids)}
        online = online_users(self._redis, [n["user_id"] for n in notifications])
        now = datetime.now(UTC)
        plans = [
            _plan_doc(f"deal-{n['_id']}", "deal", user, prefs, [n["_id"]], now)
            for n in notifications
            if (user := users.get(n["user_id"]))
            and (prefs := Preferences.from_doc(user))
            and _wants_deal_email(user, prefs, n["user_id"] in online)
        ]
        planned = _insert_new(self._db, plans)
        for batch in batched([n["_id"] for n in notifications]):
            self._db.notifications.update_many(
                {"_id": {"$in": list(batch)}}, {"$unset": {"email_pending": ""}}
            )
        return [p["_id"] for p in planned if p["send_after"] <= now]

    def _decide(self, notification: dict[str, Any]) -> str | None:
        user = self._db.users.find_one({"_id": ObjectId(notification["user_id"])})
        if not user:
            return None
        prefs = Preferences.from_doc(user)
        online = is_online(self._redis, notification["user_id"])
        if not _wants_deal_email(user, prefs, online):
            return None
        return self._plan(f"deal-{notification['_id']}", "deal", user, prefs, [notification["_id"]])

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
            unread = self._db.notifications.find(
                {
                    "user_id": str(user["_id"]),
                    "type": "deal-notification",
                    "read": False,
                    "created_at": {"$gt": end - period, "$lte": end},
                },
                {"_id": 1},
            ).sort("seq", 1)
            ids = [n["_id"] for n in unread]
            if not ids or not user.get("email"):
                continue  # nothing unread in that window: no digest
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
        claim = self._db.emails.find_one_and_update(
            {
                "_id": email_id,
                "$or": [
                    {"status": "pending", "send_after": {"$lte": now}},
                    {"status": "sending", "task_id": task_id},  # this task, retried
                    {"status": "sending", "claimed_at": {"$lt": now - timedelta(seconds=LEASE)}},
                ],
            },
            {"$set": {"status": "sending", "task_id": task_id, "claimed_at": now}},
            return_document=ReturnDocument.AFTER,
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
        deliver(self._settings, compose(self._settings, claim, user, [to_json(n) for n in notes]))
        self._db.emails.update_one(
            {"_id": email_id}, {"$set": {"status": "sent", "sent_at": datetime.now(UTC)}}
        )
        return "sent"

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


def _wants_deal_email(user: dict[str, Any], prefs: Preferences, online: bool) -> bool:
    """Whether a deal notification is emailed now (digest modes wait for their digest)."""
    if not user.get("email") or prefs.email_mode in ("never", "hourly", "daily"):
        return False
    return not (prefs.email_mode == "offline" and online)


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
    if not plans:
        return []
    try:
        db.emails.insert_many(plans, ordered=False)
    except BulkWriteError as e:
        if any(w.get("code") != DUPLICATE_KEY for w in e.details["writeErrors"]):
            raise
        dup = {w["index"] for w in e.details["writeErrors"]}
        return [p for i, p in enumerate(plans) if i not in dup]
    return plans
