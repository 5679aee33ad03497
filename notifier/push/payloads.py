"""What a push carries: the JSON the service worker reads (web/static/sw.js).

`{"type", "id", "headline", "body", "url", "tag"}`, plus for deals `count` (how many
unseen deals the push stands for) and `ack` (the signed token the worker posts back).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from notifier.formatting import money
from notifier.notifications.store import format_id
from notifier.validation import item_key

HEADLINE_LENGTH = 200
BODY_LENGTH = 400  # a push's payload must stay under about 4 KB once encrypted
SEVERITY_TITLES = {"info": "Announcement", "warning": "Warning", "critical": "Critical"}


def deal_payload(
    base_url: str, notification: dict[str, Any], count: int, ack: str
) -> dict[str, Any]:
    """What a deal push carries: its headline, the item's page, the id and the ack token."""
    data = notification["data"]
    deals = data.get("deals") or []
    details = data.get("deal_details") or []
    first = (
        details[0].get("item_key")
        if details
        else (item_key(deals[0]["item_name"]) if deals else None)
    )
    lines = [
        f"{d['item_name']} {money(d['best_price_in_cents'])} at {d['store_name']}"
        for d in deals[:3]
    ]
    if len(deals) > 3:
        lines.append(f"and {len(deals) - 3} more")
    if count > 1:
        lines.append(f"(+{count - 1} earlier deal alert{'s' if count > 2 else ''} not yet seen)")
    url = f"{base_url}/items/{urllib.parse.quote(first, safe='')}" if first else f"{base_url}/"
    return {
        "type": "deal",
        "id": format_id(notification["seq"]),
        "headline": _clip(
            data.get("headline") or data.get("message") or "New deal", HEADLINE_LENGTH
        ),
        "body": _clip("\n".join(lines), BODY_LENGTH),
        "url": url,
        "tag": f"deal:{first}" if first else f"deal:{format_id(notification['seq'])}",
        "count": count,
        "ack": ack,
    }


def announcement_payload(base_url: str, announcement: dict[str, Any]) -> dict[str, Any]:
    """What an announcement push carries (no acknowledgement: announcements have none)."""
    ident = str(announcement["_id"])
    return {
        "type": "announcement",
        "id": ident,
        "headline": SEVERITY_TITLES.get(announcement.get("severity", "info"), "Announcement"),
        "body": _clip(announcement["message"], BODY_LENGTH),
        "url": f"{base_url}/",
        "tag": f"announcement:{ident}",
    }


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
