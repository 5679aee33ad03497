"""Item pages: every store's price over the price window, and the deals notified for it."""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any

from notifier import validation
from notifier.errors import NotFound
from notifier.kinds import NotificationType
from notifier.notifications.filters import NotificationFilter
from notifier.notifications.store import NotificationRepository
from notifier.shopping.charts import Alert, price_chart
from notifier.shopping.history import PriceHistoryRepository
from notifier.shopping.watchlist import WatchlistRepository
from web.handlers.pages import PageHandler

DEALS_SHOWN = 20
ALERTS_CHARTED = 50  # the newest deal notifications on the item drawn on its chart


def alerts_on(key: str, notifications: list[dict[str, Any]]) -> list[Alert]:
    """The prices of this item the shopper was alerted at, from their deal notifications."""
    found = []
    for n in notifications:
        if n["type"] != NotificationType.DEAL:
            continue
        at = datetime.fromisoformat(n["created_at"].replace("Z", "+00:00"))
        for d in n["data"].get("deals") or []:
            if validation.item_key(d["item_name"]) == key:
                found.append(Alert(at, int(d["best_price_in_cents"]), d["store_name"]))
    return found


class ItemHandler(PageHandler):
    """GET /items/<key>: an item's prices across stores and the user's deals on it."""

    async def get(self, raw_key: str) -> None:
        """The item page; 404 for an item nobody ever priced."""
        key = validation.item_key(urllib.parse.unquote(raw_key))
        days = self.config.price_window_days
        item = (await PriceHistoryRepository(self.db).items([key], days))[key]
        if not item.current and not item.by_store:
            raise NotFound("no store has a price for this item")
        uid = self.user.user_id
        # Archived ones too: the chart shows every alert, the list what there is.
        filters = NotificationFilter(item=key, archived=None)
        deals = await NotificationRepository(self.db).page(
            uid, ALERTS_CHARTED, state=self.notification_state, filters=filters
        )
        watch = await WatchlistRepository(self.db).get(uid, key)
        target = (watch or {}).get("target_price_in_cents")
        chart = price_chart(
            item.by_store, item.days, item.item_name, target, alerts_on(key, deals.items), days
        )
        more = deals.next is not None or len(deals.items) > DEALS_SHOWN
        self.render_page(
            "pages/item.html",
            active="",
            item=item,
            chart=chart,
            target=target,
            notifications=deals.items[:DEALS_SHOWN],
            more_deals=f"/history{NotificationFilter(item=key).url()}" if more else None,
            unread_count=deals.unread_count,
            watched=watch is not None,
            watch=watch,
            days=days,
        )


default_handlers = [
    (r"/items/([^/]+)", ItemHandler),
]
