"""Notifications: the JSON API, the dashboard and history pages, and marking read."""

from __future__ import annotations

import urllib.parse
from typing import Any

from notifier import validation
from notifier.errors import InputError
from notifier.notifications.bulk import ACTIONS, MAX_IDS, BulkRequest, ReadRequest, parse_ids
from notifier.notifications.filters import FILTER_NAMES, NotificationFilter
from notifier.notifications.store import NotificationRepository, format_id, parse_id
from notifier.realtime import bus
from notifier.shopping import items as known_items
from web.handlers.base import ApiHandler, BaseHandler
from web.handlers.pages import PageHandler
from web.handlers.watchlist import watchlist_context
from web.shapes import BulkOutcome, UnreadCount

PAGE_SIZE = 20


async def mark_read(handler: BaseHandler, user_id: str, seqs: list[int] | None) -> int:
    """Mark read, tell every tab of the user on every process, return the unread count."""
    changed = await NotificationRepository(handler.db).mark_read(user_id, seqs)
    return await tell_read(handler, user_id, changed)


async def tell_read(handler: BaseHandler, user_id: str, changed: list[str]) -> int:
    """Tell every tab of the user which notifications went read; return the unread count."""
    unread = await NotificationRepository(handler.db).unread_count(user_id)
    if changed:
        # Rendered here, once, for every tab of the user on every process.
        event = handler.renderer.read_event(user_id, changed, unread)
        await bus.publish_async(handler.bus, event)
    return unread


async def bulk(handler: BaseHandler, user_id: str, request: BulkRequest) -> BulkOutcome:
    """Apply a bulk action (notifier/notifications/bulk.py); every tab hears of the ones
    that went read. `{"changed", "more", "unread_count"}`."""
    result = await request.apply(NotificationRepository(handler.db), user_id)
    unread = await tell_read(handler, user_id, result.read)
    return BulkOutcome(result.changed, result.more, unread)


def form_read_request(handler: PageHandler) -> list[int] | None:
    """The seqs a mark-read form names (`ids`, repeated), or None when it says `all`."""
    if handler.get_body_argument("all", None):
        return None
    ids = handler.get_body_arguments("ids")
    if not ids or len(ids) > MAX_IDS:
        raise InputError("choose at least one notification")
    return [parse_id(i, "ids") for i in ids]


def query_filters(handler: BaseHandler) -> NotificationFilter:
    """The history filters in the request's query (unread, type, item, store, q, since, until).

    Not stripped by Tornado (which takes "\\x1c" for a space): free text is trimmed by the
    parser, and anything else is taken as given, so a stray control character is a 400.
    """
    return NotificationFilter.parse(
        lambda name: handler.get_query_argument(name, None, strip=False)
    )


class NotificationsApiHandler(ApiHandler):
    """GET /api/notifications?limit=&before=&unread=&type=&item=&store=&q=&since=&until=."""

    async def get(self) -> None:
        """A page of the caller's notifications matching the filters, newest first."""
        limit = validation.whole_number(
            self.get_query_argument("limit", str(PAGE_SIZE)), "limit", 1, 100
        )
        before = self.get_query_argument("before", None, strip=False)
        page = await NotificationRepository(self.db).page(
            self.user.user_id,
            limit=limit,
            before=parse_id(before, "before") if before is not None else None,
            filters=query_filters(self),
        )
        self.write_json(
            {
                "items": page.items,
                "next": page.next,
                "unread_count": page.unread_count,
                "partial": page.partial,
                "searched": page.searched,
            }
        )


class NotificationsBulkApiHandler(ApiHandler):
    """POST /api/notifications/bulk."""

    async def post(self) -> None:
        """Mark read, archive or unarchive by ids or by filter."""
        request = BulkRequest.parse(self.json_body())
        self.write_json(await bulk(self, self.user.user_id, request))


class NotificationsReadApiHandler(ApiHandler):
    """POST /api/notifications/read."""

    async def post(self) -> None:
        """Mark some or all read."""
        seqs = ReadRequest.parse(self.json_body())
        self.write_json(UnreadCount(await mark_read(self, self.user.user_id, seqs)))


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
            error=None,
            known_items=await known_items.suggestions(self.db),  # the watch form's <datalist>
            **await watchlist_context(self, uid),
        )


class HistoryHandler(PageHandler):
    """GET /history?<filters>&before=<id> (older) or &after=<id> (newer), 20 a page.

    The filter form submits here (no JavaScript needed); htmx asks for the results alone
    (HX-Request) and pushes the URL, so a filtered view is a bookmark.
    """

    async def get(self) -> None:
        """One page of history, from MongoDB; bad filters answer 400 with the page and why."""
        error = None
        try:
            filters = query_filters(self)
            context = await self.results(filters)
        except InputError as e:
            filters, error = NotificationFilter(), e.message
            context = {"notifications": [], "older": None, "newer": None, "first_page": False}
            self.set_status(400)
        state = self.notification_state or await NotificationRepository(self.db).state(
            self.user.user_id
        )
        template, stores = "fragments/history_results.html", []
        if not self.request.headers.get("HX-Request"):
            template = "pages/history.html"
            stores = [s async for s in self.db.stores.find({}, {"name": 1}).sort("name", 1)]
        self.render_page(
            template,
            status=self.get_status(),
            active="history",
            unread_count=state.unread_count,
            has_live_list=True,  # the results hold the list (hidden when filtered)
            filters=filters,
            form=self.form_values(),
            stores=stores,
            error=error,
            done=done_message(self),
            **context,
        )

    def form_values(self) -> dict[str, str]:
        """What the filter form shows: the query as typed."""
        return {n: self.get_query_argument(n, "", strip=False) or "" for n in FILTER_NAMES}

    async def results(self, filters: NotificationFilter) -> dict[str, Any]:
        """The page of rows and the links to the pages around it."""
        repo = NotificationRepository(self.db)
        uid = self.user.user_id
        before, after = (
            self.get_query_argument("before", None, strip=False),
            self.get_query_argument("after", None, strip=False),
        )
        items: list[dict[str, Any]]
        searched = 0  # the search gave up after this many (CANDIDATES) before filling the page
        newer_from = None
        if after is not None:
            items, stopped = await repo.newer_page(
                uid, parse_id(after, "after"), PAGE_SIZE, filters
            )
            if stopped is not None:  # gave up: newer ones may match; search on from there
                has_newer, newer_from = True, format_id(stopped)
                searched = stopped - parse_id(after, "after")
            else:
                has_newer = bool(items) and bool(
                    (await repo.newer_page(uid, int(items[0]["id"]), 1, filters))[0]
                )
            older = items[-1]["id"] if items else None
        else:
            page = await repo.page(
                uid,
                PAGE_SIZE,
                parse_id(before, "before") if before else None,
                state=self.notification_state,
                filters=filters,
            )
            items, older = page.items, page.next
            has_newer = before is not None and bool(page.items)
            searched = page.searched if page.partial else 0
        if has_newer and newer_from is None and items:
            newer_from = items[0]["id"]
        return {
            "notifications": items,
            "older": filters.url(before=older) if older else None,
            "newer": filters.url(after=newer_from) if has_newer and newer_from else None,
            "searched": searched,
            "direction": "newer" if after is not None else "older",
            # Live rows go only to the newest page of everything (a filter would not match).
            "first_page": not has_newer and filters.empty,
        }


class HistoryReadHandler(PageHandler):
    """POST /history/read: the no-JavaScript form; redirects back."""

    async def post(self) -> None:
        """Mark the posted ids (or all) read."""
        await mark_read(self, self.user.user_id, form_read_request(self))
        back = self.get_body_argument("back", "/history")
        self.redirect(validation.safe_path(back, "/history"), status=303)


class HistoryBulkHandler(PageHandler):
    """POST /history/bulk: History's selection (or "all matching these filters") marked read,
    archived or moved back; redirects back to the same view, saying what it did."""

    async def post(self) -> None:
        """Apply the button's action to the ticked rows or to everything matching."""
        arg = self.get_body_argument
        action = arg("action", "")
        if arg("scope", None) == "matching":
            filters = NotificationFilter.parse(lambda name: arg(f"filter_{name}", None))
            request = BulkRequest(action if action in ACTIONS else "", filters=filters)
        else:
            ids = self.get_body_arguments("ids")
            if not ids:
                raise InputError("tick at least one notification, or all matching the filters")
            request = BulkRequest(action, seqs=parse_ids(ids))
        if request.action not in ACTIONS:
            raise InputError("action must be read, archive or unarchive")
        result = await bulk(self, self.user.user_id, request)
        back = validation.safe_path(arg("back", "/history"), "/history")
        path, _, query = back.partition("?")
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k not in DONE_PARAMS]
        done = {"done": action, "count": str(result.changed)}
        if result.more:
            done["more"] = "1"
        self.redirect(f"{path}?{urllib.parse.urlencode([*kept, *done.items()])}", status=303)


DONE_PARAMS = ("done", "count", "more")
DONE_WORDS = {
    "read": "Marked {n} read.",
    "archive": "Archived {n}.",
    "unarchive": "Moved {n} back to the inbox.",
}


def done_message(handler: PageHandler) -> str | None:
    """What the last bulk action did, from the redirect's query (codes, never free text)."""
    action = handler.get_query_argument("done", "")
    count = handler.get_query_argument("count", "")
    if action not in DONE_WORDS or not count.isascii() or not count.isdigit():
        return None
    n = int(count)
    message = DONE_WORDS[action].format(n=f"{n} notification{'s' if n != 1 else ''}")
    if handler.get_query_argument("more", "") == "1":
        message += " More match these filters: do it again to go on."
    return message


class ReadFragmentHandler(PageHandler):
    """POST /fragments/notifications/read: the page updates by the `read` event on its socket."""

    async def post(self) -> None:
        """Mark read; every open tab (this one too) gets the change over its socket."""
        await mark_read(self, self.user.user_id, form_read_request(self))
        self.set_status(204)
        self.finish()


class UnreadIconHandler(BaseHandler):
    """GET /icons/unread-<n>.svg: the site's icon marked with an unread count (the favicon).

    The count is in the path, so the answer is the same for everyone and cacheable; the
    page (web/static/app.js) points its icon at the current count's.
    """

    async def prepare(self) -> None:
        """No login: the picture holds nothing but the number in its own address."""

    def get(self, count: str) -> None:
        """The icon; 100 and more show "99+"."""
        n = int(count)
        label = "" if n == 0 else "99+" if n > 99 else str(n)
        width = {0: 0, 1: 17, 2: 21, 3: 27}[len(label)]
        size = 13 if len(label) < 3 else 10
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.finish(self.renderer.render("icons/unread.svg", label=label, width=width, size=size))


default_handlers = [
    (r"/", DashboardHandler),
    (r"/history", HistoryHandler),
    (r"/history/read", HistoryReadHandler),
    (r"/history/bulk", HistoryBulkHandler),
    (r"/fragments/notifications/read", ReadFragmentHandler),
    (r"/api/notifications", NotificationsApiHandler),
    (r"/api/notifications/read", NotificationsReadApiHandler),
    (r"/api/notifications/bulk", NotificationsBulkApiHandler),
    (r"/icons/unread-([0-9]{1,6})\.svg", UnreadIconHandler),
]
