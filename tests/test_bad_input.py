"""Bad input to every JSON endpoint: a 4xx JSON error, and nothing stored changes."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import form, login

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

DEEP = b"[" * 50_000  # json.loads recursed until RecursionError: a 500
JSON_ENDPOINTS = [
    ("anonymous", "POST", "/api/token"),
    ("alice", "POST", "/api/watchlist"),
    ("admin", "POST", "/api/prices"),
    ("admin", "POST", "/api/announcements"),
    ("alice", "POST", "/api/notifications/read"),
    ("alice", "POST", "/api/notifications/bulk"),
    ("alice", "PUT", "/api/preferences"),
]

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
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea", "min_discount_percent": 150}),
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea", "realert_hours": "6"}),
    ("alice", "PATCH", "/api/watchlist/Tea", {}),
    ("alice", "PATCH", "/api/watchlist/Tea", {"min_discount_percent": 0}),
    ("alice", "PATCH", "/api/watchlist/Tea", {"min_discount_percent": True}),
    ("alice", "PATCH", "/api/watchlist/Tea", {"realert_hours": 721}),
    ("alice", "PATCH", "/api/watchlist/Tea", {"realert_hours": 2.5}),
    ("alice", "PATCH", "/api/watchlist/Tea", {"item_name": "Coffee"}),
    ("alice", "PATCH", "/api/watchlist/never%20watched", {"realert_hours": 6}),
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
    ("alice", "POST", "/api/notifications/bulk", {}),
    ("alice", "POST", "/api/notifications/bulk", {"ids": ["000000000001"]}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "delete", "ids": ["000000000001"]}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "archive"}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "archive", "ids": []}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "archive", "ids": ["1"]}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "read", "filter": "all"}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "read", "filter": {"x": "1"}}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "read", "filter": {"q": 5}}),
    ("alice", "POST", "/api/notifications/bulk", {"action": "read", "filter": {"type": "x"}}),
    (
        "alice",
        "POST",
        "/api/notifications/bulk",
        {"action": "archive", "ids": ["000000000001"], "filter": {}},
    ),
    ("alice", "GET", "/api/notifications?archived=maybe", None),
    ("alice", "GET", "/api/stats", None),
    ("anonymous", "GET", "/api/notifications", None),
    ("anonymous", "GET", "/api/watchlist", None),
    ("alice", "GET", "/api/no-such-thing", None),
    # Issue 15: inputs that were 500s.
    *[(who, method, path, DEEP) for who, method, path in JSON_ENDPOINTS],
    ("anonymous", "POST", "/api/token", {"username": "\ud800", "password": "x"}),
    ("anonymous", "POST", "/api/token", {"username": "alice", "password": "\udfff"}),
    ("alice", "POST", "/api/watchlist", {"item_name": "Tea \ud800"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "item_name": "\ud800"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "store_name": "Mart \udc00"}),
    ("admin", "POST", "/api/announcements", {"message": "hi \ud800", "severity": "info"}),
    ("alice", "PUT", "/api/preferences", {"timezone": "\ud800"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "valid_until": "9999-12-31T23:59:59-23:59"}),
    ("admin", "POST", "/api/prices", {**GOOD_PRICE, "valid_until": "0001-01-01T00:00:00+23:59"}),
    ("alice", "GET", "/api/notifications?limit=%C2%B2", None),  # "²"
    ("alice", "GET", "/api/notifications?limit=%D9%A3", None),  # Arabic-Indic 3
    ("alice", "GET", "/api/notifications?limit=%EF%BC%95", None),  # fullwidth 5
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


# Forms and paths: a 4xx page or fragment, never a 500, nothing stored.
FORM_CASES = [
    ("/fragments/watchlist", {"item_name": "Tea", "target_price": "\u00b2"}),
    ("/fragments/watchlist", {"item_name": "Tea", "target_price": "\u0663.50"}),
    (
        "/fragments/admin/prices",
        {"store_name": "S", "item_name": "I", "price": "1\u00b2", "regular_price": "3"},
    ),
    (
        "/fragments/admin/prices",
        {
            "store_name": "S",
            "item_name": "I",
            "price": "1",
            "regular_price": "3",
            "valid_until": "9999-12-31T23:59:59-23:59",
        },
    ),
    ("/preferences", {"email_mode": "never", "min_discount_percent": "\u00b2"}),
    ("/preferences", {"email_mode": "never", "min_discount_percent": "\u0665"}),
]


@pytest.mark.gen_test
@pytest.mark.parametrize(("path", "fields"), FORM_CASES)
async def test_bad_form_input_is_a_4xx_and_changes_nothing(fetch, db, admin, path, fields):
    _, headers = await login(fetch, admin.username, admin.password)
    before = snapshot(db)
    response = await fetch(path, "POST", form(**fields), headers={**headers, "HX-Request": "true"})
    assert 400 <= response.code < 500, (response.code, response.body[:300])
    assert snapshot(db) == before


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "path",
    ["/static/app.js%00.css", "/static/%00", "/static/app.js%0a", "/static/..%5capp.js"],
)
async def test_impossible_static_paths_are_404(fetch, path):
    response = await fetch(path)
    assert response.code == 404


@pytest.mark.gen_test
async def test_a_protected_htmx_request_without_a_session_keeps_its_hx_redirect(fetch):
    response = await fetch("/fragments/admin/stats", headers={"HX-Request": "true"})
    assert response.code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2Ffragments%2Fadmin%2Fstats"


NASTY_STRINGS = st.one_of(
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\r\n", "\x7f", "\u00b2", "\u0663", "\uff15"]),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "+999999"]),
    st.text(
        alphabet=st.characters(codec=None, categories=["Nd", "No", "Cc", "Cs", "Zs"]), max_size=8
    ),
)
NASTY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | NASTY_STRINGS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_STRINGS, inner, max_size=3),
    max_leaves=6,
)
FIELDS = {
    "/api/token": ("username", "password"),
    "/api/watchlist": ("item_name", "target_price_in_cents"),
    "/api/prices": (*GOOD_PRICE, "valid_until"),
    "/api/announcements": ("message", "severity"),
    "/api/notifications/read": ("ids", "all"),
    "/api/notifications/bulk": ("action", "ids", "filter"),
    "/api/preferences": (
        "email_mode",
        "quiet_hours_start",
        "quiet_hours_end",
        "timezone",
        "min_discount_percent",
    ),
}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(JSON_ENDPOINTS),
    data=st.data(),
    depth=st.sampled_from([0, 0, 0, 5_000, 50_000]),
)
def test_generated_nasty_bodies_never_get_a_5xx(
    io_loop, fetch, db, alice, admin, endpoint, data, depth
):
    """The input classes of issue 15 (surrogates, other scripts' digits, control characters,
    out-of-range times, deep nesting) in every field of every JSON endpoint."""
    who, method, path = endpoint
    fields = FIELDS[path]
    body: object = data.draw(st.dictionaries(st.sampled_from(fields), NASTY_VALUES, min_size=1))
    raw = json.dumps(body).encode()
    if depth:
        raw = b"[" * depth + raw + b"]" * depth
    headers = {"alice": alice.auth, "admin": admin.auth, "anonymous": {}}[who]

    async def scenario() -> None:
        before = snapshot(db)
        response = await fetch(path, method, raw, headers=headers)
        assert response.code < 500, (response.code, raw[:200], response.body[:300])
        if response.code >= 400:
            assert json.loads(response.body)["error"]["code"]
            assert snapshot(db) == before

    io_loop.run_sync(scenario, timeout=30)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "row",
    ["S,I,1,2,9999-12-31T23:59:59-23:59", "S,I,\u00b2,2,", "S,I,1,\u0663,", "S,\ud800,1,2,"],
)
async def test_a_bad_csv_row_is_rejected_not_a_500(fetch, admin, row):
    """The same classes in a price import (checked in the web process before it is queued)."""
    csv = "store_name,item_name,price_in_cents,regular_price_in_cents,valid_until\n" + row + "\n"
    response = await fetch(
        "/api/price-imports", "POST", csv.encode("utf-8", "surrogatepass"), headers=admin.auth
    )
    assert response.code < 500, response.body
