"""Hardening round two (issue 15): each attack that got through, against a real `python -m web`.

Every test here failed on the code before the fix it names, and passes after.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from websockets.sync import client as ws_sync

from tests.conftest import ROOT, User
from tests.helpers import WebProcess

pytestmark = pytest.mark.timeout(120)


class Answer:
    """One HTTP answer, read whole."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.code = response.status
        self.headers = response.headers
        self.body = response.read()

    def cookie(self, name: str) -> str | None:
        """The raw Set-Cookie header for `name`."""
        for header in self.headers.get_all("Set-Cookie") or []:
            if header.startswith(name + "="):
                return header
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    web: WebProcess,
    path: str,
    method: str = "GET",
    body: bytes | str | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection; redirects are not followed."""
    if isinstance(body, dict):
        body = json.dumps(body)
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Answer(conn.getresponse())
    finally:
        conn.close()


def form_login(
    web: WebProcess, username: str, password: str, next_: str = "/", **headers: str
) -> tuple[Answer, dict[str, str]]:
    """Log in through the form as a browser would; the headers a browser sends next."""
    page = call(web, "/login", headers=headers)
    xsrf_cookie = SimpleCookie(page.cookie("_xsrf") or "")["_xsrf"].value
    xsrf = re.search(rb'name="_xsrf" value="([^"]+)"', page.body).group(1).decode()  # type: ignore[union-attr]
    body = urllib.parse.urlencode(
        {"_xsrf": xsrf, "username": username, "password": password, "next": next_}
    )
    answer = call(
        web,
        "/login",
        "POST",
        body,
        {
            **headers,
            "Cookie": f"_xsrf={xsrf_cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    session = {"Cookie": f"_xsrf={xsrf_cookie}", "X-XSRFToken": xsrf}
    token = answer.cookie("accessToken")
    if token:
        session["Cookie"] += "; accessToken=" + SimpleCookie(token)["accessToken"].value
    return answer, session


def api_token(web: WebProcess, username: str, password: str, **headers: str) -> Answer:
    body = {"username": username, "password": password}
    return call(web, "/api/token", "POST", body, headers)


@pytest.fixture
def start_web(env: dict[str, str]) -> Iterator[Callable[..., WebProcess]]:
    """Start `python -m web` with extra settings; each test's own Redis db for counters."""
    started: list[WebProcess] = []

    def start(**settings: str) -> WebProcess:
        web = WebProcess({**env, "REDIS_URL": env["REDIS_URL"].rsplit("/", 1)[0] + "/6"})
        web.env.update(settings)
        web.start()
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()


@pytest.fixture(autouse=True)
def fresh_login_counters(redis_server: Any) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(f"{redis_server.url}/6")
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def output(web: WebProcess) -> str:
    return b"".join(web.output).decode(errors="replace")


# 1. Open redirects ------------------------------------------------------------------------

UNSAFE_TARGETS = [
    "/\t/evil.example/",
    "/\n/evil.example/",
    "/\r/evil.example/",
    "/\\evil.example/",
    "/\\/evil.example/",
    "//evil.example/",
    "https://evil.example/",
    "/\x7f/evil.example/",
    "/x\r\nSet-Cookie: a=b",
    " //evil.example/",
]


@pytest.mark.parametrize("target", UNSAFE_TARGETS)
def test_no_parameter_that_becomes_a_location_leaves_the_site(start_web, make_user, target):
    web = start_web()
    user = make_user()
    quoted = urllib.parse.quote(target, safe="")
    # POST /login (303), GET /login when logged in (302), POST /history/read (303)
    answer, session = form_login(web, user.username, user.password, next_=target)
    assert (answer.code, answer.headers["Location"]) == (303, "/")
    again = call(web, f"/login?next={quoted}", headers=session)
    assert (again.code, again.headers["Location"]) == (302, "/")
    read = call(
        web,
        "/history/read",
        "POST",
        urllib.parse.urlencode({"all": "1", "back": target}),
        {**session, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (read.code, read.headers["Location"]) == (303, "/history")
    safe = call(web, "/login?next=%2Fhistory%3Fbefore%3D000000000009", headers=session)
    assert safe.headers["Location"] == "/history?before=000000000009"


# 2. Client address spoofing ----------------------------------------------------------------


def test_forwarded_headers_from_anyone_do_not_change_the_client_address(start_web):
    web = start_web(LOGIN_ATTEMPTS_PER_ADDRESS="3")
    for i in range(3):  # three unknown users, each try "from" another address
        spoof = {"X-Forwarded-For": f"198.51.100.{i}", "X-Real-Ip": f"198.51.100.{i}"}
        assert api_token(web, f"nobody-{i}", "wrong", **spoof).code == 401
    refused = api_token(web, "nobody-x", "wrong", **{"X-Forwarded-For": "198.51.100.99"})
    assert refused.code == 429


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client(start_web):
    web = start_web(LOGIN_ATTEMPTS_PER_ADDRESS="3", TRUSTED_PROXIES="127.0.0.1/32, 10.0.0.0/8")
    for i in range(3):  # the client prepends whatever it likes; our proxies append the truth
        hops = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7, 10.1.2.3"}
        assert api_token(web, f"nobody-{i}", "wrong", **hops).code == 401
    assert api_token(web, "nobody-x", "wrong", **{"X-Forwarded-For": "203.0.113.7"}).code == 429
    # Another real client behind the same proxies is not limited.
    assert api_token(web, "nobody-y", "wrong", **{"X-Forwarded-For": "203.0.113.8"}).code == 401


def test_a_hop_count_trusts_that_many_proxies(start_web):
    web = start_web(LOGIN_ATTEMPTS_PER_ADDRESS="2", TRUSTED_PROXIES="1")
    for i in range(2):
        hops = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.9"}
        assert api_token(web, f"nobody-{i}", "wrong", **hops).code == 401
    assert api_token(web, "n", "wrong", **{"X-Forwarded-For": "203.0.113.9"}).code == 429


# 3. Unbounded input reaching Redis ----------------------------------------------------------


def test_no_login_input_reaches_redis_unbounded(start_web, redis_server):
    import redis

    web = start_web()
    huge = "u" * 200_000
    answer, _ = form_login(web, huge, "wrong")
    assert answer.code == 401
    assert api_token(web, huge, "wrong").code == 400
    assert api_token(web, "v" * 100, "wrong").code == 401  # the longest name allowed
    assert api_token(web, "someone", "p" * 2_000_000).code == 413
    assert api_token(web, "someone", "p" * 5000).code == 400
    client = redis.Redis.from_url(f"{redis_server.url}/6")
    try:
        keys = [k.decode() for k in client.scan_iter("notifier:login:*")]
        assert keys and all(len(k) <= 64 for k in keys), keys
        assert not any("uuuu" in k or "vvvv" in k for k in keys)
        used = client.memory_usage(keys[0]) or 0
        assert used < 200
    finally:
        client.close()


# 4. Lockout by anyone ------------------------------------------------------------------------


def test_failures_from_other_addresses_do_not_lock_the_owner_out(start_web, make_user):
    web = start_web(LOGIN_ATTEMPTS_PER_ACCOUNT="3", TRUSTED_PROXIES="127.0.0.1/32")
    owner = make_user()
    for i in range(10):  # ten wrong passwords from ten addresses
        attacker = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert api_token(web, owner.username, "wrong", **attacker).code == 401
    home = {"X-Forwarded-For": "203.0.113.1"}
    assert api_token(web, owner.username, owner.password, **home).code == 200
    answer, _ = form_login(web, owner.username, owner.password, **home)
    assert answer.code == 303
    # One address guessing one account is still held to three tries.
    for _ in range(3):
        assert (
            api_token(web, owner.username, "wrong", **{"X-Forwarded-For": "192.0.2.1"}).code == 401
        )
    held = api_token(web, owner.username, owner.password, **{"X-Forwarded-For": "192.0.2.1"})
    assert held.code == 429


def test_past_the_loose_account_limit_only_fresh_addresses_may_try(start_web, make_user):
    web = start_web(LOGIN_ATTEMPTS_PER_ACCOUNT="2", TRUSTED_PROXIES="127.0.0.1/32")
    owner = make_user()
    for i in range(20):  # the account-wide limit is ten times the per-address one
        attacker = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert api_token(web, owner.username, "wrong", **attacker).code == 401
    tried = api_token(web, owner.username, owner.password, **{"X-Forwarded-For": "198.51.100.1"})
    assert tried.code == 429
    fresh = api_token(web, owner.username, owner.password, **{"X-Forwarded-For": "203.0.113.1"})
    assert fresh.code == 200


# 6. Security headers ---------------------------------------------------------------------------


def assert_security_headers(answer: Answer) -> None:
    csp = answer.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and "unsafe" not in csp
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert not re.search(r"\d", answer.headers.get("Server", ""))


def test_every_answer_has_the_security_headers_and_no_server_version(start_web, make_user):
    web = start_web()
    user = make_user()
    _, session = form_login(web, user.username, user.password)
    for path in ("/login", "/", "/history", "/preferences", "/no-such-page", "/api/me"):
        assert_security_headers(call(web, path, headers=session))
    assert_security_headers(call(web, "/static/app.css"))
    assert_security_headers(call(web, "/api/watchlist", "POST", b"x" * 1_100_000))


# 7. The session cookie follows BASE_URL ------------------------------------------------------------


def test_the_session_cookie_is_secure_when_base_url_is_https(start_web, make_user):
    web = start_web(BASE_URL="https://notifier.example")
    user = make_user()
    answer, _ = form_login(web, user.username, user.password)
    assert "secure" in answer.cookie("accessToken").lower()  # type: ignore[union-attr]


def test_only_a_trusted_proxy_may_say_the_client_used_https(start_web, make_user):
    user = make_user()
    https = {"X-Forwarded-Proto": "https"}
    untrusted = start_web()
    answer, _ = form_login(untrusted, user.username, user.password, **https)
    assert "secure" not in answer.cookie("accessToken").lower()  # type: ignore[union-attr]
    trusted = start_web(TRUSTED_PROXIES="1")
    answer, _ = form_login(trusted, user.username, user.password, **https)
    assert "secure" in answer.cookie("accessToken").lower()  # type: ignore[union-attr]


# 8. Tokens in the access log ------------------------------------------------------------------------


def test_encoded_token_names_and_values_never_reach_the_log(start_web, alice: User):
    web = start_web()
    base = web.url.replace("http", "ws")
    for query in (f"%74oken={alice.token}", f"%74%6F%6B%65%6E={alice.token}"):
        with ws_sync.connect(f"{base}/ws?format=json&{query}") as sock:
            assert json.loads(sock.recv(10))["type"] == "connection-established"
    for path in (
        f"/login?next=/x%3Ftoken%3D{alice.token}",
        f"/login?next=/x%253Ftoken%253D{alice.token}",
        f"/login?%70assword=hunter2&next=/x%3Faccess_token%3D{alice.token}",
        f"/no-such-page?a=1&%2574oken={alice.token}",
        f"/ws?T%4FKEN={alice.token}",
    ):
        call(web, path)
    web.stop()
    logged = output(web)
    assert "/ws?format=json&" in logged and "/login?next=" in logged
    for secret in (alice.token, alice.token.split(".")[1], alice.token.split(".")[2], "hunter2"):
        assert secret not in logged


# 10. Slow handshakes ---------------------------------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (reading what it sends)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def test_half_sent_headers_and_idle_connections_are_closed(start_web):
    web = start_web(HEADER_TIMEOUT="1", IDLE_TIMEOUT="2")
    half = socket.create_connection(("127.0.0.1", web.port))
    half.sendall(b"GET /ws?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web")
    idle = socket.create_connection(("127.0.0.1", web.port))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # then keep-alive, idle
    try:
        started = time.monotonic()
        assert closed_within(half, 5)
        assert time.monotonic() - started < 1.9  # the header deadline, not the idle one
        assert closed_within(idle, 5)
    finally:
        half.close()
        idle.close()


def test_one_address_cannot_hold_more_than_its_share_of_connections(start_web):
    web = start_web(CONNECTIONS_PER_ADDRESS="5", HEADER_TIMEOUT="30", IDLE_TIMEOUT="30")
    held = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(5)]
    try:
        held.append(socket.create_connection(("127.0.0.1", web.port)))
        assert closed_within(held[-1], 5)  # the sixth
        held.pop().close()
        held.pop().close()
        # Once the server has seen that close (its next loop turn), one more is served.
        deadline = time.monotonic() + 5
        while True:
            try:
                assert call(web, "/healthz").code in (200, 503)
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                assert time.monotonic() < deadline
    finally:
        for sock in held:
            sock.close()


# 11. Smaller ones ------------------------------------------------------------------------------------


def test_a_body_over_1_mb_gets_a_413_json_error(start_web, alice: User):
    web = start_web()
    big = json.dumps({"item_name": "x" * (1024 * 1024)})
    answer = call(web, "/api/watchlist", "POST", big, alice.auth)
    assert answer.code == 413
    assert answer.json()["error"]["code"] == "too_large"
    ok = call(web, "/api/watchlist", "POST", {"item_name": f"Tea {uuid.uuid4().hex}"}, alice.auth)
    assert ok.code == 201


def test_create_user_refuses_an_email_address_with_cr_lf(env, db):
    import os

    username = f"ops-{uuid.uuid4().hex[:8]}"
    for address in ("a@example.test\r\nBcc: x@evil.example", "a@example.test\n", "not-an-address"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "notifier",
                "create-user",
                username,
                "--email",
                address,
                "--password-stdin",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            input="long-enough-password\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1 and "not an email address" in result.stderr
    assert db.users.find_one({"username": username}) is None


# Also: production mode ---------------------------------------------------------------------------------

METRICS_TOKEN = "metrics-" + "m" * 32


def test_production_mode_headers_cookies_metrics_outbox_and_json_logs(start_web, make_user):
    web = start_web(
        NOTIFIER_ENV="production", METRICS_TOKEN=METRICS_TOKEN, BASE_URL="https://notifier.example"
    )
    user = make_user()
    page = call(web, "/login")
    assert_security_headers(page)
    xsrf = page.cookie("_xsrf") or ""
    assert "secure" in xsrf.lower() and "samesite=lax" in xsrf.lower()
    answer, session = form_login(web, user.username, user.password)
    cookie = (answer.cookie("accessToken") or "").lower()
    assert answer.code == 303 and all(f in cookie for f in ("secure", "httponly", "samesite=lax"))
    assert_security_headers(call(web, "/", headers=session))
    assert call(web, "/metrics").code == 401
    assert call(web, "/metrics", headers={"Authorization": "Bearer wrong"}).code == 401
    assert call(web, "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).code == 200
    assert call(web, "/dev/outbox", headers=session).code == 404
    call(web, f"/ws?token={user.token}")
    web.stop()
    lines = [line for line in output(web).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["logger"] == "tornado.access" and "/metrics" in e["message"] for e in entries)
    assert user.token not in output(web)
