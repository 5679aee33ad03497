"""The watchlist: JSON API and the dashboard's HTMX fragment (with prices and sparklines)."""

from __future__ import annotations

from typing import Any

from notifier import validation
from notifier.errors import InputError, NotFound
from notifier.shopping import items as known_items
from notifier.shopping.alerts import MAX_REALERT_HOURS
from notifier.shopping.charts import changes, sparkline
from notifier.shopping.history import PriceHistoryRepository
from notifier.shopping.watchlist import (
    MAX_DISCOUNT_PERCENT,
    WatchInput,
    WatchItem,
    WatchlistRepository,
    parse_rules,
)
from web.handlers.base import ApiHandler, BaseHandler
from web.handlers.pages import PageHandler, form_cents

SUGGESTIONS = 6


async def watchlist_context(handler: BaseHandler, user_id: str) -> dict[str, Any]:
    """What fragments/watchlist.html shows: each item's prices, its low and sparkline over
    PRICE_WINDOW_DAYS.

    Four reads whatever the number of items (the watches, the current prices, the daily
    lows: at most one per item, store and day, and which items a store has priced: the
    others are marked not yet priced); an empty watchlist suggests known items.
    """
    days = handler.config.price_window_days
    items = await WatchlistRepository(handler.db).items(user_id)
    for w in items:
        w["item_key"] = validation.item_key(w["item_name"])
    prices = await PriceHistoryRepository(handler.db).items([w["item_key"] for w in items], days)
    priced = await known_items.priced(handler.db, [w["item_key"] for w in items])
    for w in items:
        w["priced"] = w["item_key"] in priced
        p = prices[w["item_key"]]
        w["prices"] = p
        w["sparkline"] = sparkline(p.best_by_day, p.days, "Best price")
        w["price_count"] = len(changes(p.best_by_day))
    suggestions: list[str] = []
    if not items:  # known items, in key order: a bounded index read
        suggestions = await known_items.suggestions(handler.db, SUGGESTIONS)
    return {
        "watchlist": items,
        "suggestions": suggestions,
        "days": days,
        "rules_for": None,
        "rules_error": None,
    }


class WatchlistApiHandler(ApiHandler):
    """GET and POST /api/watchlist."""

    async def get(self) -> None:
        """The caller's watched items."""
        items = await WatchlistRepository(self.db).items(self.user.user_id)
        self.write_json({"items": items})

    async def post(self) -> None:
        """Watch an item (again: updates its target price)."""
        item = WatchInput.parse(self.json_body())
        name, _ = await WatchlistRepository(self.db).add(self.user.user_id, item)
        self.write_json(WatchItem(item_name=name, **item.rules()), status=201)


class WatchlistItemApiHandler(ApiHandler):
    """PATCH and DELETE /api/watchlist/<item_name>."""

    async def patch(self, item_name: str) -> None:
        """Change the watch's alert rules (those given; null clears one)."""
        rules = parse_rules(self.json_body())
        watch = await WatchlistRepository(self.db).change_rules(self.user.user_id, item_name, rules)
        self.write_json(watch)

    async def delete(self, item_name: str) -> None:
        """Stop watching an item."""
        await WatchlistRepository(self.db).remove(self.user.user_id, item_name)
        self.set_status(204)
        self.finish()


class WatchlistFragmentHandler(PageHandler):
    """GET /fragments/watchlist (a live deal refreshes it) and POST (add from the form)."""

    async def get(self) -> None:
        """The #watchlist fragment with today's prices."""
        await self.render_watchlist(WatchlistRepository(self.db))

    async def post(self) -> None:
        """Watch the item in the form."""
        repo = WatchlistRepository(self.db)
        try:
            target = form_cents(self.get_body_argument("target_price", None), "Target")
            item = WatchInput.parse(
                {
                    "item_name": self.form_text("item_name"),
                    "target_price_in_cents": target,
                }
            )
            name, priced = await repo.add(self.user.user_id, item)
        except InputError as e:
            await self.render_watchlist(repo, error=e.message, status=e.status)
            return
        await self.render_watchlist(repo, added=name, added_priced=priced)

    async def render_watchlist(
        self,
        repo: WatchlistRepository,
        error: str | None = None,
        status: int = 200,
        added: str | None = None,
        added_priced: bool = True,
        removed: dict[str, str] | None = None,
        rules_for: str | None = None,
        rules_error: str | None = None,
    ) -> None:
        """The #watchlist fragment (`rules_for`: the item whose alert settings stay open)."""
        context = await watchlist_context(self, self.user.user_id)
        context.update(rules_for=rules_for, rules_error=rules_error)
        self.render_page(
            "fragments/watchlist.html",
            status=status,
            error=error,
            added=added,
            added_priced=added_priced,
            removed=removed,
            **context,
        )


class WatchlistItemFragmentHandler(WatchlistFragmentHandler):
    """DELETE /fragments/watchlist/<item_name> from the dashboard."""

    async def delete(self, item_name: str) -> None:
        """Stop watching, with an Undo; a stale page that removes twice just sees the list."""
        repo = WatchlistRepository(self.db)
        try:
            undo = await repo.remove(self.user.user_id, item_name)
        except InputError:
            await self.render_watchlist(repo)
            return
        await self.render_watchlist(repo, removed={"item_name": item_name, "undo": undo})


class WatchlistUndoFragmentHandler(WatchlistFragmentHandler):
    """POST /fragments/watchlist-undo: put back the watch just removed."""

    async def post(self) -> None:
        """Restore it as it was (target and all); too late says so."""
        repo = WatchlistRepository(self.db)
        try:
            name = await repo.restore(self.user.user_id, self.get_body_argument("undo", ""))
        except InputError as e:
            await self.render_watchlist(repo, error=e.message, status=e.status)
            return
        await self.render_watchlist(repo, added=name)


def form_rules(handler: BaseHandler) -> dict[str, int | None]:
    """The alert rules typed in a watch's form (an empty field: no such rule)."""

    def whole(name: str, label: str, high: int) -> int | None:
        raw = handler.get_body_argument(name, "").strip()
        return validation.whole_number(raw, label, 1, high) if raw else None

    return {
        "target_price_in_cents": form_cents(
            handler.get_body_argument("target_price", None), "Target"
        ),
        "min_discount_percent": whole("min_discount", "Min. % off", MAX_DISCOUNT_PERCENT),
        "realert_hours": whole("realert_hours", "At most every … hours", MAX_REALERT_HOURS),
    }


class WatchRulesFragmentHandler(WatchlistFragmentHandler):
    """POST /fragments/watch-rules: change a watch's alert rules inline."""

    async def post(self) -> None:
        """Save them; the watchlist (or, from the item page, the settings alone) again."""
        repo = WatchlistRepository(self.db)
        name = self.get_body_argument("item_name", "")
        key = validation.item_key(name)
        error, status = None, 200
        try:
            await repo.change_rules(self.user.user_id, name, form_rules(self))
        except InputError as e:
            error, status = e.message, e.status
        if self.get_body_argument("view", "") != "item":
            await self.render_watchlist(repo, status=status, rules_for=key, rules_error=error)
            return
        watch = await repo.get(self.user.user_id, key)
        if watch is None:
            raise NotFound(f"{name!r} is not on your watchlist")
        self.render_page(
            "fragments/alert_rules.html",
            status=status,
            w=watch,
            rules_id="rules-item",
            view="item",
            rules_open=True,
            rules_saved=error is None,
            rules_error=error,
        )


class WatchRulesHandler(PageHandler):
    """POST /watchlist/rules: the same form without script; back to the page it came from."""

    async def post(self) -> None:
        """Save the rules (an error page says what was wrong), then go back."""
        name = self.get_body_argument("item_name", "")
        await WatchlistRepository(self.db).change_rules(self.user.user_id, name, form_rules(self))
        self.redirect(validation.safe_path(self.get_body_argument("next", None)), status=303)


default_handlers = [
    (r"/api/watchlist", WatchlistApiHandler),
    (r"/api/watchlist/([^/]+)", WatchlistItemApiHandler),
    (r"/fragments/watchlist", WatchlistFragmentHandler),
    (r"/fragments/watchlist-undo", WatchlistUndoFragmentHandler),
    (r"/fragments/watch-rules", WatchRulesFragmentHandler),
    (r"/watchlist/rules", WatchRulesHandler),
    (r"/fragments/watchlist/([^/]+)", WatchlistItemFragmentHandler),
]
