"""The development price feed (scheduled by beat when DEMO_FEED_INTERVAL > 0)."""

from __future__ import annotations

from notifier.dev.feed import DemoFeed
from tasks import celery
from tasks.deals import check_deals


@celery.app.task
def demo_price_feed() -> None:
    """Post this step's demo prices, then check the items they touched right away."""
    changed = DemoFeed(celery.resources.db).step()
    check_deals.delay(item_keys=changed)
