"""Admin: post prices, run a deal check, broadcast announcements, watch connections."""

from __future__ import annotations

import uuid

from notifier import validation
from notifier.errors import InputError
from notifier.notifications.announcements import AnnouncementRepository
from notifier.realtime import bus
from notifier.shopping.checks import MAX_FAILURES, failed_items
from notifier.shopping.prices import PriceInput, parse_price_csv, record_price
from notifier.storage.writes import apply_async
from web import stats
from web.handlers.base import ApiHandler, BaseHandler
from web.handlers.pages import PageHandler, form_cents
from web.shapes import AnnouncementCreated, Job, PriceCreated

CHECK_DEALS = "tasks.deals.check_deals"
IMPORT_PRICES = "tasks.prices.import_prices"
PUSH_ANNOUNCEMENT = "tasks.push.push_announcement"
STORE_ANNOUNCEMENT = "tasks.delivery.store_announcement"


async def post_price(handler: BaseHandler, price: PriceInput) -> str:
    """Record the price, then check the deals on that item right away."""
    price_id, writes = record_price(price)
    await apply_async(handler.db, writes)
    await handler.enqueue(CHECK_DEALS, item_keys=[validation.item_key(price.item_name)])
    return price_id


async def run_deal_check(handler: BaseHandler, user_id: str) -> str:
    """Queue a full deal check; `user_id` gets a job-complete notification."""
    return await handler.enqueue(CHECK_DEALS, task_id=str(uuid.uuid4()), requested_by=user_id)


async def announce(handler: BaseHandler, body: object) -> str:
    """Store an announcement, push it to every connected user on every process, and have
    workers copy it into the history of every user (notifier/notifications/announcements.py)."""
    announcement = await AnnouncementRepository(handler.db).create(body)
    # Rendered here, once, for every socket on every process.
    await bus.publish_async(handler.bus, handler.renderer.announcement_event(announcement))
    if handler.config.push_enabled:  # to the browsers of those who want it (tasks/push.py)
        await handler.enqueue(PUSH_ANNOUNCEMENT, announcement_id=str(announcement["id"]))
    await handler.enqueue(STORE_ANNOUNCEMENT, announcement=announcement)
    return str(announcement["id"])


async def import_prices(handler: BaseHandler, raw: bytes, user_id: str, filename: str) -> str:
    """Check that the file is a usable price CSV, then queue it; the worker reports back."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the file must be UTF-8 text") from None
    if not text.strip():
        raise InputError("the file is empty")
    parse_price_csv(text)  # file-level problems are refused now, before anything is queued
    return await handler.enqueue(
        IMPORT_PRICES,
        task_id=str(uuid.uuid4()),
        text=text,
        requested_by=user_id,
        filename=filename[:100],
    )


async def connection_stats(handler: BaseHandler) -> stats.Stats:
    """Connections and users across every web process."""
    return await stats.gather(handler.redis, handler.settings["process"], handler.registry)


class PricesApiHandler(ApiHandler):
    """POST /api/prices (admin)."""

    admin_only = True

    async def post(self) -> None:
        """Record a store's price."""
        price_id = await post_price(self, PriceInput.parse(self.json_body()))
        self.write_json(PriceCreated(price_id), status=201)


class DealChecksApiHandler(ApiHandler):
    """POST /api/deal-checks (admin)."""

    admin_only = True

    async def post(self) -> None:
        """Run a deal check now."""
        self.write_json(Job(await run_deal_check(self, self.user.user_id)), status=202)


class AnnouncementsApiHandler(ApiHandler):
    """POST /api/announcements (admin)."""

    admin_only = True

    async def post(self) -> None:
        """Broadcast a system message."""
        self.write_json(AnnouncementCreated(await announce(self, self.json_body())), status=202)


class PriceImportsApiHandler(ApiHandler):
    """POST /api/price-imports (admin): a CSV body; 202, then a job-complete notification."""

    admin_only = True

    async def post(self) -> None:
        """Queue a price import."""
        job_id = await import_prices(self, self.request.body, self.user.user_id, "api upload")
        self.write_json(Job(job_id), status=202)


class StatsApiHandler(ApiHandler):
    """GET /api/stats (admin)."""

    admin_only = True

    async def get(self) -> None:
        """Connection statistics."""
        self.write_json(await connection_stats(self))


class AdminHandler(PageHandler):
    """GET /admin."""

    admin_only = True

    async def get(self) -> None:
        """The admin page."""
        names = [s["name"] async for s in self.db.stores.find({}, {"name": 1}).sort("name", 1)]
        self.render_page(
            "pages/admin.html",
            active="admin",
            stores=names,
            stats=await connection_stats(self),
            failed=await failed_items(self.db),
            max_failures=MAX_FAILURES,
        )


class AdminPriceFragmentHandler(PageHandler):
    """POST /fragments/admin/prices: the admin form."""

    admin_only = True

    async def post(self) -> None:
        """Post the price in the form; answer with a one-line result."""
        arg = self.get_body_argument
        valid_until = arg("valid_until", "").strip()
        price = PriceInput.parse(
            {
                "store_name": self.form_text("store_name"),
                "item_name": self.form_text("item_name"),
                "price_in_cents": form_cents(arg("price", ""), "Price"),
                "regular_price_in_cents": form_cents(arg("regular_price", ""), "Regular price"),
                "valid_until": valid_until or None,
            }
        )
        await post_price(self, price)
        self.render_page(
            "fragments/result.html",
            error=None,
            message=f"Posted {price.item_name} at {price.store_name}.",
        )


class AdminDealCheckFragmentHandler(PageHandler):
    """POST /fragments/admin/deal-checks."""

    admin_only = True

    async def post(self) -> None:
        """Queue a deal check."""
        await run_deal_check(self, self.user.user_id)
        self.render_page(
            "fragments/result.html",
            error=None,
            message="Deal check queued; you will be notified when it is done.",
        )


class AdminAnnouncementFragmentHandler(PageHandler):
    """POST /fragments/admin/announcements."""

    admin_only = True

    async def post(self) -> None:
        """Broadcast the form's announcement."""
        await announce(
            self,
            {
                "message": self.get_body_argument("message", ""),
                "severity": self.get_body_argument("severity", "info"),
            },
        )
        self.render_page("fragments/result.html", error=None, message="Announcement sent.")


class AdminImportFragmentHandler(PageHandler):
    """POST /fragments/admin/price-imports: the admin page's file upload."""

    admin_only = True

    async def post(self) -> None:
        """Queue the uploaded file."""
        files = self.request.files.get("file")
        if not files:
            raise InputError("choose a CSV file to import")
        upload = files[0]
        await import_prices(self, upload.body, self.user.user_id, upload.filename)
        self.render_page(
            "fragments/result.html",
            error=None,
            message=f"Importing {upload.filename}; you will be notified when done.",
        )


class AdminStatsFragmentHandler(PageHandler):
    """GET /fragments/admin/stats, polled by the admin page."""

    admin_only = True

    async def get(self) -> None:
        """The live connection figures."""
        self.render_page("fragments/stats.html", stats=await connection_stats(self))


default_handlers = [
    (r"/admin", AdminHandler),
    (r"/api/prices", PricesApiHandler),
    (r"/api/deal-checks", DealChecksApiHandler),
    (r"/api/announcements", AnnouncementsApiHandler),
    (r"/api/price-imports", PriceImportsApiHandler),
    (r"/api/stats", StatsApiHandler),
    (r"/fragments/admin/prices", AdminPriceFragmentHandler),
    (r"/fragments/admin/deal-checks", AdminDealCheckFragmentHandler),
    (r"/fragments/admin/announcements", AdminAnnouncementFragmentHandler),
    (r"/fragments/admin/price-imports", AdminImportFragmentHandler),
    (r"/fragments/admin/stats", AdminStatsFragmentHandler),
]
