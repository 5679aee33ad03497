"""The watchlist: JSON API and the dashboard's HTMX fragment."""

from __future__ import annotations

from notifier.errors import InputError
from notifier.shopping.watchlist import WatchInput, WatchlistRepository
from web.handlers.base import ApiHandler
from web.handlers.pages import PageHandler, form_cents


class WatchlistApiHandler(ApiHandler):
    """GET and POST /api/watchlist."""

    async def get(self) -> None:
        """The caller's watched items."""
        items = await WatchlistRepository(self.db).items(self.user.user_id)
        self.write_json({"items": items})

    async def post(self) -> None:
        """Watch an item (again: updates its target price)."""
        item = WatchInput.parse(self.json_body())
        await WatchlistRepository(self.db).add(self.user.user_id, item)
        self.write_json(
            {"item_name": item.item_name, "target_price_in_cents": item.target_price_in_cents},
            status=201,
        )


class WatchlistItemApiHandler(ApiHandler):
    """DELETE /api/watchlist/<item_name>."""

    async def delete(self, item_name: str) -> None:
        """Stop watching an item."""
        await WatchlistRepository(self.db).remove(self.user.user_id, item_name)
        self.set_status(204)
        self.finish()


class WatchlistFragmentHandler(PageHandler):
    """POST /fragments/watchlist: add from the dashboard form, answer with the new list."""

    async def post(self) -> None:
        """Watch the item in the form."""
        repo = WatchlistRepository(self.db)
        try:
            target = form_cents(self.get_body_argument("target_price", None), "Target")
            item = WatchInput.parse(
                {
                    "item_name": self.get_body_argument("item_name", ""),
                    "target_price_in_cents": target,
                }
            )
            await repo.add(self.user.user_id, item)
        except InputError as e:
            await self.render_watchlist(repo, error=e.message, status=e.status)
            return
        await self.render_watchlist(repo)

    async def render_watchlist(
        self, repo: WatchlistRepository, error: str | None = None, status: int = 200
    ) -> None:
        """The #watchlist fragment."""
        items = await repo.items(self.user.user_id)
        self.render_page("fragments/watchlist.html", status=status, watchlist=items, error=error)


class WatchlistItemFragmentHandler(WatchlistFragmentHandler):
    """DELETE /fragments/watchlist/<item_name> from the dashboard."""

    async def delete(self, item_name: str) -> None:
        """Stop watching; a stale page that removes twice just sees the list."""
        repo = WatchlistRepository(self.db)
        try:
            await repo.remove(self.user.user_id, item_name)
        except InputError:
            pass
        await self.render_watchlist(repo)


default_handlers = [
    (r"/api/watchlist", WatchlistApiHandler),
    (r"/api/watchlist/([^/]+)", WatchlistItemApiHandler),
    (r"/fragments/watchlist", WatchlistFragmentHandler),
    (r"/fragments/watchlist/([^/]+)", WatchlistItemFragmentHandler),
]
