"""The JSON API as an OpenAPI 3.1 document, served at GET /api/openapi.json.

The request bodies' schemas are generated from the Structs the handlers decode them
with (msgspec.json.schema_components), so what is documented is what is checked; the
table of paths is written here. tests/test_openapi.py keeps it true: every /api route is
described here and nothing else is, and schemathesis checks the running service against
it (no 5xx, every status, content type and body as documented).
"""

from __future__ import annotations

from typing import Any

import msgspec

from notifier.accounts.auth import Credentials
from notifier.accounts.preferences import Preferences
from notifier.errors import ErrorBody
from notifier.kinds import TYPE_NAMES, NotificationType
from notifier.notifications.announcements import AnnouncementInput
from notifier.notifications.bulk import BulkInput, ReadRequest
from notifier.notifications.filters import MAX_QUERY, TIME_PATTERN
from notifier.notifications.store import CANDIDATES, NotificationPage
from notifier.push.acks import PushAck
from notifier.push.subscriptions import PushRemoval, PushSubscription
from notifier.shopping.deals import DealData
from notifier.shopping.prices import PriceInput
from notifier.shopping.watchlist import AlertRules, WatchInput, WatchItem, Watchlist
from notifier.validation import NOTIFICATION_ID
from web.shapes import RESPONSES
from web.stats import Stats

JSON = "application/json"
ID = {"type": "string", "pattern": NOTIFICATION_ID, "description": "a notification id"}
ITEM_NAME = {
    "name": "item_name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
TYPES = [t.value for t in NotificationType]


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """A JSON object schema."""
    return {"type": "object", "required": required, "properties": properties}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def body(schema: dict[str, Any], status: str, description: str) -> dict[str, Any]:
    """A response with a JSON body."""
    return {status: {"description": description, "content": {JSON: {"schema": schema}}}}


def error(status: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error response: the contract's `{"error": {"code", "message"}}`."""
    response: dict[str, Any] = body(ref("ErrorBody"), status, description)
    if headers:
        response[status]["headers"] = headers
    return response


BAD_INPUT = error("400", "the input is not valid; nothing was changed")
UNAUTHORIZED = error("401", "no valid token")
FORBIDDEN = error("403", "the caller is not an admin")


def operation(
    summary: str,
    responses: dict[str, Any],
    request: dict[str, Any] | None = None,
    public: bool = False,
    admin: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation, with the errors every authenticated operation can give."""
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if request is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": request}}}
        op["responses"].update(BAD_INPUT)
    if parameters:
        op["parameters"] = parameters
        op["responses"].update(BAD_INPUT)
    if public:
        op["security"] = []
    else:
        op["responses"].update(UNAUTHORIZED)
    if admin:
        op["responses"].update(FORBIDDEN)
    return op


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


REQUEST_BODIES = [
    Credentials,
    WatchInput,
    AlertRules,
    PriceInput,
    AnnouncementInput,
    ReadRequest,
    BulkInput,
    Preferences,
    PushSubscription,
    PushRemoval,
    PushAck,
]
RESPONSE_BODIES = [
    *RESPONSES,
    ErrorBody,
    WatchItem,
    Watchlist,
    NotificationPage,
    DealData,
    Stats,
]
_, GENERATED = msgspec.json.schema_components(
    REQUEST_BODIES + RESPONSE_BODIES, ref_template="#/components/schemas/{name}"
)

SCHEMAS: dict[str, Any] = {
    **GENERATED,
    "Health": {
        **obj(["status"], status={"enum": ["ok", "unavailable"]}),
        "additionalProperties": {"type": "string"},
    },
}

PATHS: dict[str, Any] = {
    "/api/openapi.json": {
        "get": operation(
            "This document",
            {"200": {"description": "OpenAPI 3.1", "content": {JSON: {}}}},
            public=True,
        )
    },
    "/api/token": {
        "post": operation(
            "A bearer token for a username and password",
            {
                **body(ref("Token"), "200", "the token"),
                **error("401", "wrong username or password"),
                **error(
                    "429",
                    "too many failed logins for this account or address",
                    {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
                ),
            },
            request=ref("Credentials"),
            public=True,
        )
    },
    "/api/me": {"get": operation("Who the token speaks for", body(ref("Me"), "200", "the caller"))},
    "/api/watchlist": {
        "get": operation("The caller's watched items", body(ref("Watchlist"), "200", "the items")),
        "post": operation(
            "Watch an item; again updates its target",
            body(ref("WatchItem"), "201", "watched"),
            request=ref("WatchInput"),
        ),
    },
    "/api/watchlist/{item_name}": {
        "patch": {
            **operation(
                "Change a watch's alert rules (the fields given; null clears one)",
                {
                    **body(ref("WatchItem"), "200", "the watch as it is now"),
                    **error("404", "the item is not on the watchlist"),
                },
                request=ref("AlertRules"),
            ),
            "parameters": [ITEM_NAME],
        },
        "delete": {
            **operation(
                "Stop watching an item",
                {
                    "204": {"description": "no longer watched"},
                    **error("404", "the item is not on the watchlist"),
                },
            ),
            "parameters": [ITEM_NAME],
        },
    },
    "/api/notifications": {
        "get": operation(
            "The caller's notifications, newest first; a filtered page reads at most "
            f"{CANDIDATES} notifications to fill itself (see `partial`)",
            body(ref("NotificationPage"), "200", "one page"),
            parameters=[
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    "page size",
                ),
                query("before", ID, "only notifications older than this id"),
                query(
                    "unread",
                    {"enum": ["", "0", "1", "true", "false"]},
                    "true (or 1): unread only",
                ),
                query(
                    "type",
                    {"enum": ["", *TYPES, *TYPE_NAMES]},
                    "one type; deals, announcements and jobs name the three",
                ),
                query(
                    "item",
                    {"type": "string", "maxLength": MAX_QUERY},
                    "deals on this item (its name; case and spacing do not matter)",
                ),
                query(
                    "store",
                    {"type": "string", "maxLength": MAX_QUERY},
                    "deals at this store (its id, as in the deals' store_id)",
                ),
                query(
                    "q",
                    {"type": "string", "maxLength": MAX_QUERY},
                    "deals whose item names have words starting with each word of q",
                ),
                query(
                    "since",
                    {"type": "string", "pattern": f"^$|{TIME_PATTERN}"},
                    "created at or after (ISO 8601; a date alone is its midnight, UTC "
                    "when no zone is given)",
                ),
                query(
                    "until",
                    {"type": "string", "pattern": f"^$|{TIME_PATTERN}"},
                    "created at or before (ISO 8601; a date alone covers that whole day)",
                ),
                query(
                    "archived",
                    {"enum": ["", "0", "1", "true", "false", "all"]},
                    "true (or 1): archived only; all: archived or not; by default archived "
                    "notifications are left out",
                ),
            ],
        )
    },
    "/api/notifications/bulk": {
        "post": operation(
            "Mark read, archive (which also marks read) or unarchive, by ids or by filter",
            body(ref("BulkOutcome"), "200", "how many changed, and what is left unread"),
            request=ref("BulkInput"),
        )
    },
    "/api/notifications/read": {
        "post": operation(
            "Mark some or all read; every open tab of the caller hears of it",
            body(ref("UnreadCount"), "200", "what is left unread"),
            request=ref("ReadRequest"),
        )
    },
    "/api/preferences": {
        "get": operation(
            "The caller's email preferences", body(ref("Preferences"), "200", "the preferences")
        ),
        "put": operation(
            "Replace the caller's preferences (fields left out take defaults)",
            body(ref("Preferences"), "200", "as stored"),
            request=ref("Preferences"),
        ),
    },
    "/api/push/public-key": {
        "get": operation(
            "The key browsers subscribe to Web Push with",
            {
                **body(ref("PushPublicKey"), "200", "the key"),
                **error("404", "Web Push is off (production without VAPID keys)"),
            },
            public=True,
        )
    },
    "/api/push-subscriptions": {
        "post": operation(
            "Store this browser's push subscription (idempotent by endpoint; a user keeps "
            "the 10 newest)",
            {
                **body(ref("PushSubscribed"), "201", "stored"),
                **error("404", "Web Push is off"),
            },
            request=ref("PushSubscription"),
        ),
        "delete": operation(
            "Remove one subscription of the caller's, or all of them",
            {
                "204": {"description": "removed (or there was none)"},
                **error("404", "Web Push is off"),
            },
            request=ref("PushRemoval"),
        ),
    },
    "/api/push/ack": {
        "post": operation(
            "The service worker showed a pushed deal: acknowledged as a page's `ack` (no "
            "cookie or token: the push's signed `ack` is the proof)",
            {"204": {"description": "acknowledged"}, **error("404", "Web Push is off")},
            request=ref("PushAck"),
            public=True,
        )
    },
    "/api/prices": {
        "post": operation(
            "Record a store's current price for an item; its deals are checked at once",
            body(ref("PriceCreated"), "201", "recorded"),
            request=ref("PriceInput"),
            admin=True,
        )
    },
    "/api/price-imports": {
        "post": {
            **operation(
                "Import a CSV of prices; the caller gets a job-complete notification",
                {**body(ref("Job"), "202", "queued"), **BAD_INPUT},
                admin=True,
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {
                        "schema": {
                            "type": "string",
                            "description": "a header of store_name, item_name, price_in_cents, "
                            "regular_price_in_cents and optionally valid_until",
                        }
                    }
                },
            },
        }
    },
    "/api/deal-checks": {
        "post": operation(
            "Run a full deal check; the caller gets a job-complete notification",
            body(ref("Job"), "202", "queued"),
            admin=True,
        )
    },
    "/api/announcements": {
        "post": operation(
            "Broadcast a system message to every user",
            body(ref("AnnouncementCreated"), "202", "stored and sent"),
            request=ref("AnnouncementInput"),
            admin=True,
        )
    },
    "/api/stats": {
        "get": operation(
            "Connections and users across web processes",
            body(ref("Stats"), "200", "the figures"),
            admin=True,
        )
    },
    "/healthz": {
        "get": operation(
            "MongoDB and Redis reachable from this process",
            {
                **body(ref("Health"), "200", "all up"),
                **body(ref("Health"), "503", "names what is down"),
            },
            public=True,
        )
    },
    "/readyz": {
        "get": operation(
            "Ready to serve sockets: MongoDB and Redis answer and the bus subscription is live",
            {
                **body(ref("Readiness"), "200", "ready"),
                **body(ref("Readiness"), "503", "`down` names what is not"),
            },
            public=True,
        )
    },
    "/metrics": {
        "get": {
            **operation(
                "Prometheus metrics of this process (every name starts with notifier_)",
                {
                    "200": {"description": "text format", "content": {"text/plain": {}}},
                    **error("401", "METRICS_TOKEN is set and this is not it"),
                    **error("404", "production without METRICS_TOKEN: not served"),
                },
                public=True,
            ),
            "security": [{"metrics": []}, {}],
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "notifier",
        "version": "1",
        "description": "Deal notifications for grocery shoppers. Live delivery is over WS /ws "
        "(see the README); a client acknowledges what it showed a person there with "
        '`{"type": "ack", "last_id": id}`; a deal nobody acknowledged or read within '
        "PUSH_ACK_WAIT seconds is pushed to the user's subscribed browsers (Web Push), whose "
        "service worker acknowledges what it shows, and one still unacknowledged after "
        "EMAIL_ACK_WAIT seconds is emailed (mode offline). This is the JSON API. Errors are "
        '`{"error": {"code", "message"}}`.',
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "metrics": {
                "type": "http",
                "scheme": "bearer",
                "description": "METRICS_TOKEN, when it is set",
            },
            "cookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "accessToken",
                "description": "the login page's session; writes also need the "
                "_xsrf cookie echoed in X-XSRFToken",
            },
        },
    },
}
