"""The base for HTML pages and HTMX fragments: login redirects and errors as HTML."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from notifier.accounts.auth import Identity
from notifier.errors import Forbidden, InputError, NotFound, Unauthorized
from notifier.notifications.state import UserState
from notifier.notifications.store import NotificationRepository, format_id
from notifier.realtime import progress
from web.handlers.base import BaseHandler

_DOLLARS, _CENTS = re.compile(r"[0-9]{1,7}"), re.compile(r"[0-9]{1,2}")


class PageHandler(BaseHandler):
    """Pages and fragments; anonymous visitors are sent to /login."""

    login_required = True
    admin_only = False
    live_from: str | None = None
    notification_state: UserState | None = None  # read once per page view, by prepare
    job_progress: dict[str, Any] | None = None  # a running job's bar, for a page opened mid-job

    async def prepare(self) -> None:
        """Check access; for a page view, note where the user's notifications stand now.

        Read before the page's own queries, that position is where the page's socket
        starts (as last_id), so nothing created while the page loads is missed. It is
        the user's state document (one read), which the page reuses for its counts; its
        seq is never ahead, so at worst the socket replays a row the page already shows.
        """
        await self.authenticate()
        self.check_access()
        page_view = self.request.method == "GET" and not self.request.headers.get("HX-Request")
        if self.identity is not None and page_view:
            state = await NotificationRepository(self.db).state(self.identity.user_id)
            self.notification_state = state
            self.live_from = format_id(state.max_seq)
            self.job_progress = await progress.current(self.redis, self.identity.user_id)

    def check_access(self) -> None:
        """Redirect anonymous page views to /login; refuse others with 401/403."""
        if not self.login_required:
            return
        if self.identity is None:
            target = "/login?" + urllib.parse.urlencode({"next": self.request.uri or "/"})
            if self.request.headers.get("HX-Request"):
                # On the error itself: send_error clears the headers set before it.
                raise Unauthorized("please log in again", headers={"HX-Redirect": target})
            if self.request.method in ("GET", "HEAD"):
                self.redirect(target)
                return
            raise Unauthorized("please log in")
        if self.admin_only and not self.identity.is_admin:
            raise Forbidden("this page is for admins")

    @property
    def user(self) -> Identity:
        """The logged-in user (prepare guarantees one)."""
        assert self.identity is not None
        return self.identity

    def form_text(self, name: str) -> str:
        """A form field as it was sent ("" when absent).

        Tornado's get_body_argument turns control characters into spaces without a word;
        names go through validation.name instead, which refuses them with a message.
        """
        values = self.request.body_arguments.get(name)
        return self.decode_argument(values[-1], name=name) if values else ""

    def render_page(self, template: str, status: int = 200, **context: Any) -> None:
        """Render a page or fragment with what every template may use."""
        if "unread_count" not in context and self.notification_state is not None:
            context["unread_count"] = self.notification_state.unread_count  # title, badge
        self.set_status(status)
        self.finish(
            self.renderer.render(
                template,
                user=self.identity,
                xsrf_token=self.xsrf_token.decode(),
                static_url=self.static_url,
                request_uri=self.request.uri,
                last_id=self.live_from,
                job_progress=self.job_progress,
                dev_outbox=not self.config.production and not self.config.smtp_url,
                **context,
            )
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """An error as a message fragment (HTMX) or an error page."""
        if self.request.path.startswith("/api/"):
            super().write_error(status_code, **kwargs)
            return
        message = self.error_of(status_code, kwargs.get("exc_info")).message
        if self.request.headers.get("HX-Request"):
            self.finish(self.renderer.render("fragments/result.html", error=message))
            return
        self.render_page("pages/error.html", status=status_code, code=status_code, message=message)


def form_cents(value: str | None, label: str) -> int | None:
    """Dollars typed in a form ("2.49") as cents (249); None when left empty."""
    if value is None or not value.strip():
        return None
    whole, _, frac = value.strip().removeprefix("$").partition(".")
    if not _DOLLARS.fullmatch(whole) or (frac and not _CENTS.fullmatch(frac)):
        # ASCII digits only: "²".isdigit() is true, and int("²") raises.
        raise InputError(f"{label} must be an amount in dollars, like 2.49")
    return int(whole) * 100 + int(frac.ljust(2, "0"))


class NotFoundHandler(PageHandler):
    """Any unknown path: a JSON 404 under /api/, a page elsewhere."""

    login_required = False

    async def prepare(self) -> None:
        """Nothing lives here."""
        raise NotFound("there is nothing at this address")
