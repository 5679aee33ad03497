"""GET /api/openapi.json: a valid OpenAPI 3.1 document that stays true.

Every JSON route is described, and schemathesis drives the real web process with data
made from the document, valid and not: no 5xx, and every status, content type, header
and body is one the document gives.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pymongo import MongoClient
from schemathesis import checks

from notifier.accounts.auth import issue_token
from notifier.accounts.users import create_user
from notifier.storage.schema import ensure_indexes
from notifier.storage.writes import apply
from tests.conftest import JWT_SECRET
from tests.helpers import WebProcess
from web.openapi import DOCUMENT

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
    checks.unsupported_method,
]


@pytest.fixture(scope="module")
def api(env: dict[str, str], mongo_server: Any, redis_server: Any) -> Iterator[tuple[str, str]]:
    """A web process of its own (its own database and Redis db), and an admin's token.

    Its own, because the fuzzing posts prices and announcements and fails logins by the
    hundred, which must not reach the other tests' users or rate limits.
    """
    uri = f"{mongo_server.url}/notifier_openapi_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    db = client.get_default_database()
    ensure_indexes(db)
    apply(db, [create_user("fuzz-admin", "fuzz-password", "admin", "fuzz@example.test")])
    user_id = str(db.users.find_one({"username": "fuzz-admin"})["_id"])  # type: ignore[index]
    token = issue_token(JWT_SECRET, user_id, "fuzz-admin", "admin", 3600)
    web = WebProcess({**env, "MONGODB_URI": uri, "REDIS_URL": f"{redis_server.url}/9"})
    web.start()
    try:
        yield web.url, token
    finally:
        web.stop()
        client.drop_database(db.name)
        client.close()


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_every_json_route_is_documented_and_nothing_else(app: Any) -> None:
    documented = {
        (re.sub(r"\{[^}]+\}", "{}", path), method)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
    }
    served = set()
    for rule in app.default_router.rules[0].target.rules:
        path = rule.matcher.regex.pattern.rstrip("$").replace("([^/]+)", "{}")
        if path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics"):
            served |= {(path, m.lower()) for m in rule.target.allowed_methods()}
    assert served == documented


schema = schemathesis.openapi.from_dict(DOCUMENT)  # what GET /api/openapi.json serves

# Issue 15's input classes, which schema-made data seldom hits: lone surrogates, other
# scripts' digits, control characters and offsets that push a date past year 9999. Some
# generated bodies and queries get one of these in one of their fields.
NASTY = st.sampled_from(
    [
        "\ud800",
        "x\udfff",
        "\u00b2",
        "\u0663",
        "\uff15",
        "/\t/evil.example/",
        "\r\n",
        "\x7f",
        "\x00",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
    ]
)


# A URL cannot carry a lone surrogate (it has no UTF-8 form): only JSON bodies can.
NASTY_IN_URL = NASTY.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text))


def _nastier(value: Any, nasty: st.SearchStrategy[str] = NASTY) -> st.SearchStrategy[Any]:
    if not isinstance(value, dict) or not value:
        return st.just(value)
    return st.builds(lambda key, bad: {**value, key: bad}, st.sampled_from(sorted(value)), nasty)


@schema.hook
def before_generate_body(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy.flatmap(lambda body: st.one_of(st.just(body), _nastier(body)))


@schema.hook
def before_generate_query(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy.flatmap(lambda query: st.one_of(st.just(query), _nastier(query, NASTY_IN_URL)))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_documented(case: Any, api: tuple[str, str]) -> None:
    base_url, token = api
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
