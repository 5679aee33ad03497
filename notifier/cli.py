"""`python -m notifier`: operations from a shell (the release step, users, prices, stats).

Exit codes: 0 done, 1 failed (the reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pymongo.synchronous.database import Database

from notifier import validation, vapid
from notifier.accounts.auth import hash_password
from notifier.accounts.revocation import revoke_sync
from notifier.accounts.users import ROLES, create_user
from notifier.email.service import EmailService
from notifier.errors import CommandFailed, InputError
from notifier.migrations import add_search_fields, migrate
from notifier.notifications.state import recount
from notifier.notifications.store import NotificationWriter
from notifier.realtime.bus import make_publisher
from notifier.realtime.events import LogoutEvent
from notifier.realtime.presence import STATS_KEY, STATS_STALE_AFTER
from notifier.realtime.publishing import NotificationService
from notifier.settings import ConfigurationError, Settings
from notifier.shopping.deals import DealCheck
from notifier.shopping.prices import parse_price_csv, record_price
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply

MIN_PASSWORD = 8


class Context:
    """The settings and the clients a command uses, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._mongo: MongoClient[dict[str, Any]] | None = None
        self._redis: redis.Redis | None = None

    @property
    def db(self) -> Database[dict[str, Any]]:
        """The notifier database."""
        if self._mongo is None:
            self._mongo = MongoClient(self.settings.mongodb_uri, serverSelectionTimeoutMS=5000)
        return self._mongo.get_default_database("notifier")

    @property
    def redis(self) -> redis.Redis:
        """The Redis server for locks, stats and (without a cluster) the bus."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
        return self._redis

    def close(self) -> None:
        """Close whatever was opened."""
        if self._mongo is not None:
            self._mongo.close()
        if self._redis is not None:
            self._redis.close()


def cmd_migrate(ctx: Context, args: argparse.Namespace) -> None:
    """Create the indexes and run the data migrations not yet run (the release step)."""
    ensure_indexes(ctx.db, ctx.settings.price_history_days)
    ran = migrate(ctx.db)
    done = ", ".join(f"{name} ({changed} changed)" for name, changed in ran) or "none pending"
    print(f"notifier: indexes are in place; migrations run: {done}")
    keyed = add_search_fields(ctx.db)
    if keyed:
        print(f"notifier: search keys added to {keyed} older deal notification(s)")


def cmd_repair_counts(ctx: Context, args: argparse.Namespace) -> None:
    """Recount every user's state document (newest seq, unread) from the notifications."""
    users = recount(ctx.db, args.user or None)
    print(f"notifier: recounted the state of {users} user(s)")


def cmd_create_user(ctx: Context, args: argparse.Namespace) -> None:
    """Create a user; the password comes from stdin or a prompt, never from the command line."""
    username = validation.name(args.username, "username")
    # Checked where it enters: an address with CR/LF would fail at every email, forever.
    email = validation.email_address(args.email) if args.email is not None else None
    if ctx.db.users.find_one({"username": username}, {"_id": 1}):
        raise CommandFailed(f"a user named {username!r} already exists")
    password = _read_password(args, username)
    apply(ctx.db, [create_user(username, password, args.role, email)])
    user = ctx.db.users.find_one({"username": username}, {"_id": 1})
    assert user is not None
    print(f"notifier: created {args.role} {username} ({user['_id']})")


def _read_password(args: argparse.Namespace, username: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {username}: ")
    if len(password) < MIN_PASSWORD:
        raise CommandFailed(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > validation.PASSWORD_LENGTH:
        raise CommandFailed(f"the password must be at most {validation.PASSWORD_LENGTH} characters")
    return validation.storable(password, "password")


def _user_id(ctx: Context, username: str) -> str:
    user = ctx.db.users.find_one({"username": username}, {"_id": 1})
    if user is None:
        raise CommandFailed(f"there is no user named {username!r}")
    return str(user["_id"])


def _revoke(ctx: Context, user_id: str) -> None:
    """Revoke the user's tokens and close their sockets on every web process."""
    revoke_sync(ctx.db, ctx.redis, user_id)
    make_publisher(ctx.settings, ctx.redis).publish(LogoutEvent(user_id=user_id))


def cmd_set_password(ctx: Context, args: argparse.Namespace) -> None:
    """Set a user's password (stdin or a prompt); every token issued before is revoked."""
    user_id = _user_id(ctx, args.username)
    password = _read_password(args, args.username)
    ctx.db.users.update_one(
        {"username": args.username}, {"$set": {"password_hash": hash_password(password)}}
    )
    _revoke(ctx, user_id)
    print(f"notifier: password of {args.username} changed; their sessions are logged out")


def cmd_set_role(ctx: Context, args: argparse.Namespace) -> None:
    """Give a user a role; tokens issued before carry the old role, so they are revoked."""
    user_id = _user_id(ctx, args.username)
    changed = ctx.db.users.update_one({"username": args.username}, {"$set": {"role": args.role}})
    if changed.modified_count:
        _revoke(ctx, user_id)
    print(f"notifier: {args.username} is now {args.role}")


def cmd_import_prices(ctx: Context, args: argparse.Namespace) -> None:
    """Apply a price CSV (the admin page's format), then check deals on its items."""
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CommandFailed(f"cannot read {args.file}: {e}") from None
    parsed = parse_price_csv(text)  # InputError: the file as a whole is unusable
    for _, price in parsed.rows:
        apply(ctx.db, record_price(price)[1])
    print(f"notifier: {len(parsed.rows)} row(s) applied, {len(parsed.rejected)} rejected")
    for rejected in parsed.rejected:
        print(f"  line {rejected['line']}: {rejected['reason']}", file=sys.stderr)
    items = sorted({validation.item_key(p.item_name) for _, p in parsed.rows})
    if items and not args.no_check:
        _check(ctx, items)
    if parsed.rejected:
        raise CommandFailed(f"{len(parsed.rejected)} row(s) of {args.file} were rejected")


def cmd_check_deals(ctx: Context, args: argparse.Namespace) -> None:
    """Run the deal check here and now, for all items or some (workers may run at once)."""
    _check(ctx, [validation.item_key(i) for i in args.item] or None)


def _check(ctx: Context, item_keys: list[str] | None) -> None:
    publisher = make_publisher(ctx.settings, ctx.redis)
    service = NotificationService(NotificationWriter(ctx.db), publisher)
    result = DealCheck(
        ctx.db,
        service,
        ctx.settings.deal_check_chunk_users,
        ctx.settings.price_window_days,
        ctx.settings.alert_memory_days,
    ).run(item_keys)
    # Planned emails are sent by beat's next sweep; offline ones are decided by beat too,
    # once EMAIL_ACK_WAIT has shown whether a page acknowledged them.
    emails = EmailService(ctx.settings, ctx.db, ctx.redis)
    pending = [n for n in result.notifications if n.get("email_pending")]
    planned = len(emails.plan_for_deals(pending))
    print(f"notifier: deal check: {result.summary()}; {planned} email(s) planned")


def cmd_stats(ctx: Context, args: argparse.Namespace) -> None:
    """Counts from MongoDB and the web processes' live connection figures, as JSON."""
    db = ctx.db
    figures: dict[str, Any] = {
        "users": db.users.count_documents({}),
        "admins": db.users.count_documents({"role": "admin"}),
        "watched_items": db.watchlists.count_documents({}),
        "notifications": db.notifications.count_documents({}),
        "unread": db.notifications.count_documents({"read": False}),
        "outbox": sum(len(r["ids"]) for r in db.outbox.find({}, {"ids": 1})),
        "emails_pending": db.emails.count_documents({"status": {"$in": ["pending", "sending"]}}),
        "emails_sent": db.emails.count_documents({"status": "sent"}),
        "push_subscriptions": db.push_subscriptions.count_documents({}),
        "pushes_pending": db.pushes.count_documents({"status": {"$in": ["pending", "sending"]}}),
    }
    now, processes = time.time(), []
    for raw in ctx.redis.hvals(STATS_KEY):
        try:
            p = json.loads(raw)
        except ValueError:
            continue
        if isinstance(p, dict) and now - p.get("at", 0) < STATS_STALE_AFTER:
            processes.append({k: p.get(k) for k in ("process", "connections", "users")})
    figures["web_processes"] = len(processes)
    figures["connections"] = sum(p["connections"] or 0 for p in processes)
    figures["processes"] = sorted(processes, key=lambda p: str(p["process"]))
    print(json.dumps(figures, indent=2))


def cmd_vapid_keys(args: argparse.Namespace) -> None:
    """Print a new VAPID key pair for Web Push (set VAPID_PRIVATE_KEY to the private one)."""
    private = vapid.new_private_key()
    print(
        f"# public key (derived from the private one; browsers subscribe with it): "
        f"{vapid.public_key(private)}"
    )
    print(f"VAPID_PRIVATE_KEY={private}")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="python -m notifier", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help=cmd_migrate.__doc__).set_defaults(run=cmd_migrate)
    p = sub.add_parser("repair-counts", help=cmd_repair_counts.__doc__)
    p.add_argument("--user", action="append", default=[], help="only this user id (repeatable)")
    p.set_defaults(run=cmd_repair_counts)
    p = sub.add_parser("create-user", help=cmd_create_user.__doc__)
    p.add_argument("username")
    p.add_argument("--role", choices=ROLES, default="shopper")
    p.add_argument("--email", default=None)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(run=cmd_create_user)
    p = sub.add_parser("set-password", help=cmd_set_password.__doc__)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(run=cmd_set_password)
    p = sub.add_parser("set-role", help=cmd_set_role.__doc__)
    p.add_argument("username")
    p.add_argument("role", choices=ROLES)
    p.set_defaults(run=cmd_set_role)
    p = sub.add_parser("import-prices", help=cmd_import_prices.__doc__)
    p.add_argument(
        "file",
        help="CSV with store_name,item_name,price_in_cents,regular_price_in_cents[,valid_until]",
    )
    p.add_argument("--no-check", action="store_true", help="do not run a deal check after")
    p.set_defaults(run=cmd_import_prices)
    p = sub.add_parser("check-deals", help=cmd_check_deals.__doc__)
    p.add_argument("--item", action="append", default=[], help="only this item (repeatable)")
    p.set_defaults(run=cmd_check_deals)
    sub.add_parser("stats", help=cmd_stats.__doc__).set_defaults(run=cmd_stats)
    # Needs no settings: it runs before any are configured.
    sub.add_parser("vapid-keys", help=cmd_vapid_keys.__doc__).set_defaults(alone=cmd_vapid_keys)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = parser().parse_args(argv)
    if getattr(args, "alone", None) is not None:
        args.alone(args)
        return 0
    try:
        settings = Settings.from_env()
    except ConfigurationError as e:
        print(f"notifier: {e}", file=sys.stderr)
        return 1
    ctx = Context(settings)
    try:
        args.run(ctx, args)
        return 0
    except (CommandFailed, InputError) as e:
        print(f"notifier: {e.message if isinstance(e, InputError) else e}", file=sys.stderr)
    except PyMongoError as e:
        print(f"notifier: MongoDB is unavailable or refused: {e}", file=sys.stderr)
    except (redis.RedisError, OSError) as e:
        print(f"notifier: Redis is unavailable or refused: {e}", file=sys.stderr)
    finally:
        ctx.close()
    return 1
