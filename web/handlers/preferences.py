"""Preferences: how and when a shopper hears about deals (JSON API and page)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from notifier.accounts.preferences import EMAIL_MODES, Preferences, PreferencesRepository
from notifier.errors import InputError
from notifier.push.subscriptions import SubscriptionRepository
from notifier.shopping.watchlist import WatchlistRepository
from web.handlers.base import ApiHandler
from web.handlers.pages import PageHandler

_NUMBER = re.compile(r"[0-9]{1,3}")
MODE_LABELS = {
    "never": "Never",
    "offline": "When I'm not online (default)",
    "always": "Always",
    "hourly": "Hourly digest",
    "daily": "Daily digest",
}


class PreferencesApiHandler(ApiHandler):
    """GET and PUT /api/preferences (targets per item stay with /api/watchlist)."""

    async def get(self) -> None:
        """The caller's preferences."""
        prefs = await PreferencesRepository(self.db).get(self.user.user_id)
        self.write_json(prefs.to_json())

    async def put(self) -> None:
        """Replace the caller's preferences; fields left out take their defaults."""
        prefs = Preferences.parse(self.json_body())
        await PreferencesRepository(self.db).put(self.user.user_id, prefs)
        self.write_json(prefs.to_json())


class PreferencesHandler(PageHandler):
    """GET and POST /preferences: the form (works without JavaScript)."""

    async def get(self) -> None:
        """The preferences page."""
        prefs = await PreferencesRepository(self.db).get(self.user.user_id)
        await self.show(prefs, saved=self.get_query_argument("saved", None) is not None)

    async def post(self) -> None:
        """Save the form, or show it again with the error."""
        arg = self.get_body_argument
        quiet = arg("quiet_hours_start", "").strip(), arg("quiet_hours_end", "").strip()
        discount = arg("min_discount_percent", "0").strip() or "0"
        body: dict[str, object] = {
            "email_mode": arg("email_mode", "offline"),
            "quiet_hours_start": quiet[0] or None,
            "quiet_hours_end": quiet[1] or None,
            "timezone": arg("timezone", "UTC").strip() or "UTC",
            # ASCII digits only: int("²") raises although "²".isdigit() is true.
            "min_discount_percent": int(discount) if _NUMBER.fullmatch(discount) else discount,
        }
        if arg("push_form", None) is not None:  # the form's checkboxes: absent is unticked
            body["push_deals"] = arg("push_deals", None) is not None
            body["push_announcements"] = arg("push_announcements", None) is not None
        try:
            prefs = Preferences.parse(body)
        except InputError as e:
            await self.show(Preferences(), error=e.message, form=body, status=400)
            return
        await PreferencesRepository(self.db).put(self.user.user_id, prefs)
        self.redirect("/preferences?saved=1", status=303)

    async def show(
        self,
        prefs: Preferences,
        saved: bool = False,
        error: str | None = None,
        form: Mapping[str, object] | None = None,
        status: int = 200,
    ) -> None:
        """Render the page."""
        self.render_page(
            "pages/preferences.html",
            status=status,
            active="preferences",
            prefs=form or prefs.to_json(),
            modes=[(m, MODE_LABELS[m]) for m in EMAIL_MODES],
            ack_wait=int(self.config.email_ack_wait),
            push_enabled=self.config.push_enabled,
            push_wait=int(self.config.push_ack_wait),
            push_browsers=await SubscriptionRepository(self.db).count(self.user.user_id),
            saved=saved,
            error=error,
            watchlist=await WatchlistRepository(self.db).items(self.user.user_id),
        )


default_handlers = [
    (r"/api/preferences", PreferencesApiHandler),
    (r"/preferences", PreferencesHandler),
]
