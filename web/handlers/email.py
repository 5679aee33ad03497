"""Email links and the development outbox: one-click unsubscribe (RFC 8058), .eml listing."""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
from datetime import UTC, datetime
from pathlib import Path

from bson import ObjectId

from notifier.email.service import InvalidLink, read_unsubscribe_token
from notifier.errors import NotFound
from web.handlers.pages import PageHandler


class UnsubscribeHandler(PageHandler):
    """GET shows a button (mail scanners follow links); POST unsubscribes, token only."""

    login_required = False

    def check_xsrf_cookie(self) -> None:
        """Mail clients post here without cookies (RFC 8058); the signed token is the proof."""

    def get(self) -> None:
        """Confirm before unsubscribing."""
        token = self.get_argument("token", "")
        try:
            read_unsubscribe_token(self.config.jwt_secret, token)
        except InvalidLink:
            self.show("invalid", 400)
            return
        self.show("confirm", token=token)

    async def post(self) -> None:
        """Unsubscribe once; a tampered or reused link gets a page that says so."""
        try:
            user_id, email_id = read_unsubscribe_token(
                self.config.jwt_secret, self.get_argument("token", "")
            )
        except InvalidLink:
            self.show("invalid", 400)
            return
        used = await self.db.emails.find_one_and_update(
            {"_id": email_id, "user_id": user_id, "unsubscribed_at": {"$exists": False}},
            {"$set": {"unsubscribed_at": datetime.now(UTC)}},
        )
        if used is None:
            exists = await self.db.emails.find_one(
                {"_id": email_id, "user_id": user_id}, {"_id": 1}
            )
            self.show("used" if exists else "invalid", 410 if exists else 400)
            return
        await self.db.users.update_one(
            {"_id": ObjectId(user_id)}, {"$set": {"preferences.email_mode": "never"}}
        )
        self.show("done")

    def show(self, state: str, status: int = 200, token: str = "") -> None:
        """The unsubscribe page in one of its states."""
        self.render_page("pages/unsubscribe.html", status=status, state=state, token=token)


class OutboxHandler(PageHandler):
    """GET /dev/outbox[/<name>]: emails written without SMTP_URL (development only).

    A shopper sees only the emails sent to their own address (unsubscribe links are in
    them); an admin sees every one.
    """

    def check_access(self) -> None:
        """Only in development, and only without an SMTP server."""
        if self.config.production or self.config.smtp_url:
            raise NotFound("there is nothing at this address")
        super().check_access()

    async def get(self, name: str | None = None) -> None:
        """The list, or one email's raw text."""
        outbox = self.config.var_dir / "outbox"
        mine = await self.own_address()
        if name:
            path = outbox / Path(name).name
            if path.suffix != ".eml" or not path.is_file() or not _to(read_headers(path), mine):
                raise NotFound("no such email")
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(path.read_bytes())
            return
        files = sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
        emails = []
        for path in files[:SCANNED]:
            msg = read_headers(path)
            if _to(msg, mine):
                emails.append(
                    {
                        "name": path.name,
                        "to": msg["To"],
                        "subject": msg["Subject"],
                        "date": msg["Date"],
                    }
                )
            if len(emails) == SHOWN:
                break
        self.render_page(
            "pages/outbox.html",
            active="outbox",
            emails=emails,
            outbox=str(outbox),
            everyone=mine is None,
        )

    async def own_address(self) -> str | None:
        """The shopper's address (lower case); None for an admin, who sees every email."""
        if self.user.is_admin:
            return None
        if not ObjectId.is_valid(self.user.user_id):
            return ""
        user = await self.db.users.find_one({"_id": ObjectId(self.user.user_id)}, {"email": 1})
        return str((user or {}).get("email") or "").lower()


SCANNED = 2000  # newest files looked at for a shopper's emails
SHOWN = 200


def read_headers(path: Path) -> email.message.Message:
    """An .eml file's headers (the body is not parsed)."""
    with path.open("rb") as f:
        return email.parser.BytesHeaderParser(policy=email.policy.default).parse(f)


def _to(msg: email.message.Message, address: str | None) -> bool:
    """Whether the email is for this address (None: anyone's will do)."""
    if address is None:
        return True
    found = [a.lower() for _, a in email.utils.getaddresses([str(msg["To"] or "")])]
    return bool(address) and address in found


default_handlers = [
    (r"/unsubscribe", UnsubscribeHandler),
    (r"/dev/outbox", OutboxHandler),
    (r"/dev/outbox/([^/]+)", OutboxHandler),
]
