"""Logging in: the login page and cookie, the token API, /api/me, logout."""

from __future__ import annotations

import json
import urllib.parse

import jwt
import pytest

from tests.conftest import JWT_SECRET
from tests.helpers import browser_session, form, login, set_cookie_header


@pytest.mark.gen_test
async def test_login_page_has_the_contract_fields(fetch):
    page = await fetch("/login")
    assert page.code == 200
    html = page.body.decode()
    assert 'name="username"' in html and 'name="password"' in html and 'type="password"' in html


@pytest.mark.gen_test
async def test_login_sets_an_httponly_samesite_cookie_and_redirects_home(fetch, alice):
    response, headers = await login(fetch, alice.username, alice.password)
    assert response.code == 303 and response.headers["Location"] == "/"
    raw = set_cookie_header(response, "accessToken").lower()
    assert "httponly" in raw and "samesite=lax" in raw and "secure" not in raw
    home = await fetch("/", headers=headers)
    assert home.code == 200 and alice.username in home.body.decode()


@pytest.mark.gen_test
async def test_login_with_a_wrong_password_shows_an_error(fetch, alice):
    response, headers = await login(fetch, alice.username, "not-it")
    assert response.code == 401
    assert "Wrong username or password" in response.body.decode()
    assert "accessToken" not in headers["Cookie"]


@pytest.mark.gen_test
async def test_login_form_without_xsrf_is_refused(fetch, alice):
    body = form(username=alice.username, password=alice.password)
    response = await fetch("/login", "POST", body)
    assert response.code == 403


@pytest.mark.gen_test
async def test_login_redirects_only_to_local_paths(fetch, alice):
    cookie, xsrf = await browser_session(fetch)
    for nxt, expected in (
        ("/history", "/history"),
        ("https://evil.example/", "/"),
        ("//evil", "/"),
    ):
        body = form(_xsrf=xsrf, username=alice.username, password=alice.password, next=nxt)
        response = await fetch("/login", "POST", body, headers={"Cookie": cookie})
        assert response.headers["Location"] == expected


@pytest.mark.gen_test
async def test_pages_send_anonymous_visitors_to_login(fetch):
    response = await fetch("/history")
    assert response.code == 302
    assert response.headers["Location"] == "/login?" + urllib.parse.urlencode({"next": "/history"})


@pytest.mark.gen_test
async def test_token_for_good_credentials(fetch, alice):
    response = await fetch(
        "/api/token", "POST", {"username": alice.username, "password": alice.password}
    )
    assert response.code == 200
    body = json.loads(response.body)
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256"
    claims = jwt.decode(body["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == alice.user_id and {"exp", "iat"} <= claims.keys()
    me = await fetch("/api/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert json.loads(me.body) == {
        "user_id": alice.user_id,
        "username": alice.username,
        "role": "shopper",
    }


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "nobody-here", "password": "x"}, 401, "invalid_credentials"),
        ({"username": "ALICE", "password": "x"}, 401, "invalid_credentials"),
        ({"password": "x"}, 400, "invalid_input"),
        ({"username": "alice"}, 400, "invalid_input"),
        ({"username": "alice", "password": 12}, 400, "invalid_input"),
        ({}, 400, "invalid_input"),
        ([], 400, "invalid_input"),
        ("not json", 400, "invalid_json"),
    ],
)
async def test_token_refusals(fetch, body, status, code):
    response = await fetch("/api/token", "POST", body if body != "not json" else b"{oops")
    assert response.code == status
    assert json.loads(response.body)["error"]["code"] == code


@pytest.mark.gen_test
async def test_wrong_password_for_a_real_user_is_401(fetch, alice):
    response = await fetch("/api/token", "POST", {"username": alice.username, "password": "no"})
    assert response.code == 401


@pytest.mark.gen_test
async def test_api_needs_a_valid_token(fetch, alice):
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {alice.token}x"},
    ):
        response = await fetch("/api/me", headers=headers)
        assert response.code == 401
        assert json.loads(response.body) == {
            "error": {"code": "unauthorized", "message": "a valid token is required"}
        }


@pytest.mark.gen_test
async def test_cookie_posts_need_the_xsrf_token_but_bearer_posts_do_not(fetch, alice, item):
    _, headers = await login(fetch, alice.username, alice.password)
    without = {"Cookie": headers["Cookie"]}
    refused = await fetch("/api/watchlist", "POST", {"item_name": item}, headers=without)
    assert refused.code == 403 and json.loads(refused.body)["error"]["code"] == "xsrf"
    accepted = await fetch("/api/watchlist", "POST", {"item_name": item}, headers=headers)
    assert accepted.code == 201
    bearer = await fetch("/api/watchlist", "POST", {"item_name": item + "b"}, headers=alice.auth)
    assert bearer.code == 201


@pytest.mark.gen_test
async def test_logout_clears_the_cookie_and_closes_the_users_sockets(fetch, ws_connect, alice, bob):
    _, headers = await login(fetch, alice.username, alice.password)
    alice_ws = await ws_connect("?format=json", headers={"Cookie": headers["Cookie"]})
    bob_ws = await ws_connect(f"?format=json&token={bob.token}")
    xsrf = headers["X-XSRFToken"]
    response = await fetch(
        "/logout", "POST", form(_xsrf=xsrf), headers={"Cookie": headers["Cookie"]}
    )
    assert response.code == 303 and response.headers["Location"] == "/login"
    assert (
        set_cookie_header(response, "accessToken").startswith('accessToken="";')
        or "expires=" in set_cookie_header(response, "accessToken").lower()
    )
    assert await alice_ws.closed() == (4002, "logged out")
    bob_ws.send_json({"type": "ping"})
    assert (await bob_ws.recv_json())["type"] == "pong"
