"""Bad input to every JSON endpoint: a 4xx JSON error, and nothing stored changes."""

from __future__ import annotations

import hashlib
import json

import pytest

COLLECTIONS = (
    "users",
    "stores",
    "prices",
    "watchlists",
    "notifications",
    "announcements",
    "counters",
)

GOOD_PRICE = {
    "store_name": "Fresh Mart",
    "item_name": "Milk",
    "price_in_cents": 199,
    "regular_price_in_cents": 249,
}

# (who, method, path, body)
CASES = [
    ("alice", "POST", "/api/watchlist", b"{not json"),
    ("alice", "POST", "/api/watchlist", []),
    ("alice", "POST", "/api/watchlist", "just a string"),
    ("alice", "POST", "/api/watchlist", {}),
    ("alice", "POST", "/api/watchlist", {"item_name": ""}),
    ("alice", "POST", "/api/watchlist", {"item_name": "   "}),
    ("alice", "POST", "/api/watchlist", {"item_name": 42}),
    ("alice", "POST", "/api/watchlist", {"item_name": "x" * 101}),
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea", "target_price_in_cents": -5}),
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea", "target_price_in_cents": "5"}),
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea", "target_price_in_cents": 1.5}),
    ("alice", "DELETE", "/api/watchlist/never%20watched", None),
    ("alice", "PUT", "/api/watchlist", {"item_name": "Tea"}),
    ("alice", "POST", "/api/prices", GOOD_PRICE),  # not an admin
    ("anonymous", "POST", "/api/prices", GOOD_PRICE),
    ("admin", "POST", "/api/prices", b"\xff\xfe"),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "price_in_cents": None}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "price_in_cents": 300}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "regular_price_in_cents": 10**12}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "store_name": None}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "valid_until": "next week"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "valid_until": "2000-01-01T00:00:00Z"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "valid_until": 1735689600}),
    ("alice", "POST", "/api/deal-checks", None),
    ("anonymous", "POST", "/api/deal-checks", None),
    ("alice", "POST", "/api/announcements", {"message": "hi", "severity": "info"}),
    ("admin", "POST", "/api/announcements", {}),
    ("admin", "POST", "/api/announcements", {"message": "", "severity": "info"}),
    ("admin", "POST", "/api/announcements", {"message": "hi", "severity": "loud"}),
    ("admin", "POST", "/api/announcements", {"message": "x" * 501}),
    ("admin", "POST", "/api/announcements", [{"message": "hi"}]),
    ("alice", "GET", "/api/notifications?limit=0", None),
    ("alice", "GET", "/api/notifications?limit=101", None),
    ("alice", "GET", "/api/notifications?limit=ten", None),
    ("alice", "GET", "/api/notifications?limit=-1", None),
    ("alice", "GET", "/api/notifications?before=xyz", None),
    ("alice", "GET", "/api/notifications?before=12", None),
    ("alice", "GET", "/api/notifications?unread=maybe", None),
    ("alice", "POST", "/api/notifications/read", {}),
    ("alice", "POST", "/api/notifications/read", {"ids": []}),
    ("alice", "POST", "/api/notifications/read", {"ids": "000000000001"}),
    ("alice", "POST", "/api/notifications/read", {"ids": ["nope"]}),
    ("alice", "POST", "/api/notifications/read", {"ids": [1]}),
    ("alice", "POST", "/api/notifications/read", {"ids": ["000000000001"] * 501}),
    ("alice", "POST", "/api/notifications/read", {"all": False}),
    ("alice", "POST", "/api/notifications/read", {"all": "yes"}),
    ("alice", "POST", "/api/notifications/read", b"[}"),
    ("alice", "GET", "/api/stats", None),
    ("anonymous", "GET", "/api/notifications", None),
    ("anonymous", "GET", "/api/watchlist", None),
    ("alice", "GET", "/api/no-such-thing", None),
]


def snapshot(db) -> str:
    digest = hashlib.sha256()
    for name in COLLECTIONS:
        for doc in db[name].find({}).sort("_id", 1):
            digest.update(repr(sorted(doc.items())).encode())
    return digest.hexdigest()


@pytest.mark.gen_test
@pytest.mark.parametrize(("who", "method", "path", "body"), CASES)
async def test_bad_input_is_a_4xx_json_error_and_changes_nothing(
    fetch, db, alice, admin, who, method, path, body
):
    headers = {"alice": alice.auth, "admin": admin.auth, "anonymous": {}}[who]
    before = snapshot(db)
    response = await fetch(path, method, body, headers=headers)
    assert 400 <= response.code < 500, (response.code, response.body)
    assert response.headers["Content-Type"].startswith("application/json")
    error = json.loads(response.body)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    assert snapshot(db) == before
