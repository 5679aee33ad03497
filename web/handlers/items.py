"""Item pages: every store's price over the history window, and the deals notified for it."""

from __future__ import annotations

import urllib.parse

from notifier import validation
from notifier.notifications.filters import NotificationFilter
from notifier.notifications.store import NotificationRepository
from notifier.shopping.charts import price_chart
from notifier.shopping.history import PriceHistoryRepository
from web.handlers.base import ApiError
from web.handlers.pages import PageHandler

DEALS_SHOWN = 20


class ItemHandler(PageHandler):
    """GET /items/<key>: an item's prices across stores and the user's deals on it."""

    async def get(self, raw_key: str) -> None:
        """The item page; 404 for an item nobody ever priced."""
        key = validation.item_key(urllib.parse.unquote(raw_key))
        days = self.config.price_history_days
        item = (await PriceHistoryRepository(self.db).items([key], days))[key]
        if not item.current and not item.by_store:
            raise ApiError(404, "not_found", "no store has a price for this item")
        uid = self.user.user_id
        filters = NotificationFilter(item=key)
        deals = await NotificationRepository(self.db).page(
            uid, DEALS_SHOWN, state=self.notification_state, filters=filters
        )
        watched = await self.db.watchlists.find_one({"user_id": uid, "item_key": key}, {"_id": 1})
        self.render_page(
            "pages/item.html",
            active="",
            item=item,
            chart=price_chart(item.by_store, item.days, item.item_name),
            notifications=deals.items,
            more_deals=f"/history{filters.url()}" if deals.next else None,
            unread_count=deals.unread_count,
            watched=watched is not None,
            days=days,
        )


default_handlers = [
    (r"/items/([^/]+)", ItemHandler),
]
