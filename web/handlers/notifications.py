"""Notifications: the JSON API, the dashboard and history pages, and marking read."""

from __future__ import annotations

from typing import Any

from notifier import validation
from notifier.errors import InputError
from notifier.notifications.store import NotificationRepository, parse_id
from notifier.realtime import bus
from notifier.shopping.watchlist import WatchlistRepository
from web.handlers.base import ApiHandler, BaseHandler
from web.handlers.pages import PageHandler

PAGE_SIZE = 20
MAX_IDS = 500


async def mark_read(handler: BaseHandler, user_id: str, seqs: list[int] | None) -> int:
    """Mark read, tell every tab of the user on every process, return the unread count."""
    repo = NotificationRepository(handler.db)
    changed = await repo.mark_read(user_id, seqs)
    unread = await repo.unread_count(user_id)
    if changed:
        # Rendered here, once, for every tab of the user on every process.
        event = handler.renderer.read_event(user_id, changed, unread)
        await bus.publish_async(handler.bus, event)
    return unread


def parse_read_request(body: object) -> list[int] | None:
    """`{"ids": [...]}` or `{"all": true}` -> the seqs, or None for all."""
    b = validation.body_object(body, ("ids", "all"))
    if b == {"all": True}:
        return None
    ids = b.get("ids")
    if len(b) != 1 or not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise InputError(f'give "ids" (a list of 1 to {MAX_IDS} notification ids) or "all": true')
    return [parse_id(i, "ids") for i in ids]


def form_read_request(handler: PageHandler) -> list[int] | None:
    """The seqs a mark-read form names (`ids`, repeated), or None when it says `all`."""
    if handler.get_body_argument("all", None):
        return None
    ids = handler.get_body_arguments("ids")
    if not ids or len(ids) > MAX_IDS:
        raise InputError("choose at least one notification")
    return [parse_id(i, "ids") for i in ids]


class NotificationsApiHandler(ApiHandler):
    """GET /api/notifications?limit=&before=&unread=1."""

    async def get(self) -> None:
        """A page of the caller's notifications, newest first."""
        limit = validation.whole_number(
            self.get_query_argument("limit", str(PAGE_SIZE)), "limit", 1, 100
        )
        before = self.get_query_argument("before", None)
        unread = self.get_query_argument("unread", "0")
        if unread not in ("0", "1", "true", "false"):
            raise InputError("unread must be 1 or 0")
        page = await NotificationRepository(self.db).page(
            self.user.user_id,
            limit=limit,
            before=parse_id(before, "before") if before is not None else None,
            unread_only=unread in ("1", "true"),
        )
        self.write_json({"items": page.items, "next": page.next, "unread_count": page.unread_count})


class NotificationsReadApiHandler(ApiHandler):
    """POST /api/notifications/read."""

    async def post(self) -> None:
        """Mark some or all read."""
        seqs = parse_read_request(self.json_body())
        self.write_json({"unread_count": await mark_read(self, self.user.user_id, seqs)})


class DashboardHandler(PageHandler):
    """GET /: latest notifications, watchlist, live badge and toasts."""

    async def get(self) -> None:
        """The dashboard."""
        uid = self.user.user_id
        page = await NotificationRepository(self.db).page(
            uid, limit=10, state=self.notification_state
        )
        self.render_page(
            "pages/dashboard.html",
            active="dashboard",
            notifications=page.items,
            unread_count=page.unread_count,
            has_live_list=True,
            watchlist=await WatchlistRepository(self.db).items(uid),
            error=None,
        )


class HistoryHandler(PageHandler):
    """GET /history?before=<id> (older) or ?after=<id> (newer), 20 a page."""

    async def get(self) -> None:
        """One page of history, from MongoDB."""
        repo = NotificationRepository(self.db)
        uid = self.user.user_id
        before, after = (
            self.get_query_argument("before", None),
            self.get_query_argument("after", None),
        )
        items: list[dict[str, Any]]
        if after is not None:
            items = await repo.newer_page(uid, parse_id(after, "after"), PAGE_SIZE)
            has_newer = bool(items) and bool(await repo.newer_page(uid, int(items[0]["id"]), 1))
            older = items[-1]["id"] if items else None
            state = self.notification_state or await repo.state(uid)
            unread = state.unread_count
        else:
            page = await repo.page(
                uid,
                PAGE_SIZE,
                parse_id(before, "before") if before else None,
                state=self.notification_state,
            )
            items, older, unread = page.items, page.next, page.unread_count
            has_newer = before is not None and bool(page.items)
        self.render_page(
            "pages/history.html",
            active="history",
            notifications=items,
            unread_count=unread,
            older=older,
            newer=f"?after={items[0]['id']}" if has_newer and items else None,
            first_page=not has_newer,
            has_live_list=not has_newer,
        )


class HistoryReadHandler(PageHandler):
    """POST /history/read: the no-JavaScript form; redirects back."""

    async def post(self) -> None:
        """Mark the posted ids (or all) read."""
        await mark_read(self, self.user.user_id, form_read_request(self))
        back = self.get_body_argument("back", "/history")
        self.redirect(validation.safe_path(back, "/history"), status=303)


class ReadFragmentHandler(PageHandler):
    """POST /fragments/notifications/read: the page updates by the `read` event on its socket."""

    async def post(self) -> None:
        """Mark read; every open tab (this one too) gets the change over its socket."""
        await mark_read(self, self.user.user_id, form_read_request(self))
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/", DashboardHandler),
    (r"/history", HistoryHandler),
    (r"/history/read", HistoryReadHandler),
    (r"/fragments/notifications/read", ReadFragmentHandler),
    (r"/api/notifications", NotificationsApiHandler),
    (r"/api/notifications/read", NotificationsReadApiHandler),
]
