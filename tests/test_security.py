"""Attacks on authentication and the socket: every one is refused and changes nothing."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect
from websockets.sync import client as ws_sync

from tests.conftest import JWT_SECRET
from tests.helpers import WebProcess

ENDPOINTS = [
    ("GET", "/api/me", None),
    ("GET", "/api/watchlist", None),
    ("POST", "/api/watchlist", {"item_name": "Tea"}),
    ("DELETE", "/api/watchlist/Tea", None),
    (
        "POST",
        "/api/prices",
        {"store_name": "S", "item_name": "I", "price_in_cents": 1, "regular_price_in_cents": 2},
    ),
    ("POST", "/api/deal-checks", {}),
    ("POST", "/api/announcements", {"message": "hi", "severity": "info"}),
    ("POST", "/api/price-imports", "store_name,item_name,price_in_cents,regular_price_in_cents\n"),
    ("GET", "/api/notifications", None),
    ("POST", "/api/notifications/read", {"all": True}),
    ("GET", "/api/stats", None),
    ("GET", "/api/preferences", None),
    ("PUT", "/api/preferences", {"email_mode": "never"}),
]


def bad_tokens(user) -> dict[str, str]:
    now = int(time.time())
    good = {
        "sub": user.user_id,
        "username": user.username,
        "role": "admin",
        "iat": now,
        "exp": now + 600,
    }
    sign = lambda claims, key=JWT_SECRET, alg="HS256": jwt.encode(claims, key, algorithm=alg)  # noqa: E731
    no = lambda *names: {k: v for k, v in good.items() if k not in names}  # noqa: E731
    return {
        "bad-signature": user.token[:-6]
        + ("AAAAAA" if not user.token.endswith("AAAAAA") else "BBBBBB"),
        "alg-none": jwt.encode(good, None, algorithm="none"),
        "another-key": sign(good, "someone-elses-secret-" + "k" * 32),
        "expired": sign({**good, "iat": now - 7200, "exp": now - 3600}),
        "not-yet-valid": sign({**good, "nbf": now + 3600}),
        "no-sub": sign(no("sub")),
        "no-exp": sign(no("exp")),
        "no-iat": sign(no("iat")),
        "garbage": "Bearer.is.not-a-jwt",
    }


@pytest.mark.gen_test(timeout=60)
async def test_every_endpoint_and_the_handshake_refuse_every_bad_token(
    fetch, ws_connect, db, admin
):
    before = db.watchlists.count_documents({}) + db.prices.count_documents({})
    tried = 0
    for name, token in {"none": None, **bad_tokens(admin)}.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path, body in ENDPOINTS:
            response = await fetch(path, method, body, headers=headers)
            assert response.code == 401, (name, method, path, response.code)
            assert json.loads(response.body)["error"]["code"] == "unauthorized"
            tried += 1
        for query in (f"?format=json&token={token}", f"?format=html&token={token}"):
            with pytest.raises(HTTPClientError) as refused:
                await ws_connect(query if token else "?format=json")
            assert refused.value.code == 401, name
        cookie = await fetch("/api/me", headers={"Cookie": f"accessToken={token}"} if token else {})
        assert cookie.code == 401
    assert before == db.watchlists.count_documents({}) + db.prices.count_documents({})
    print(f"\nrefused {tried} API calls with bad or missing tokens")


@pytest.mark.gen_test
async def test_a_cross_site_cookie_handshake_is_refused(http_server, base_url, alice):
    ws = base_url.replace("http", "ws") + "/ws?format=json"
    cookie = {"Cookie": f"accessToken={alice.token}"}
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(
            HTTPRequest(ws, headers={**cookie, "Origin": "https://evil.example"})
        )
    assert refused.value.code == 403
    own = await websocket_connect(HTTPRequest(ws, headers={**cookie, "Origin": base_url}))
    own.close()
    # A token in the URL is not ambient authority: any origin may present it.
    with_token = await websocket_connect(
        HTTPRequest(f"{ws}&token={alice.token}", headers={"Origin": "https://app.example"})
    )
    with_token.close()


@pytest.mark.gen_test
async def test_a_frame_over_64_kib_closes_only_that_socket(ws_connect, alice):
    big = await ws_connect(f"?format=json&token={alice.token}")
    other = await ws_connect(f"?format=json&token={alice.token}")
    big.conn.write_message("x" * (64 * 1024 + 1))
    assert (await big.closed())[0] == 1009
    other.send_json({"type": "ping"})
    assert (await other.recv_json())["type"] == "pong"


@pytest.mark.gen_test
async def test_more_than_100_messages_a_minute_are_throttled(ws_connect, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    started = time.monotonic()
    for _ in range(130):
        sock.send_json({"type": "ping"})
    answers = [await sock.recv_json() for _ in range(130)]
    refilled = (time.monotonic() - started) * 100 / 60  # the bucket refills as time passes
    pongs = sum(a["type"] == "pong" for a in answers)
    limited = [a for a in answers if a["type"] == "error"]
    assert 100 <= pongs <= 100 + refilled + 1
    assert len(limited) == 130 - pongs and limited
    assert {a["data"]["code"] for a in limited} == {"rate_limited"}
    sock.send_json({"type": "ping"})
    assert (await sock.recv_json())["type"] in ("pong", "error")  # throttled, never closed


frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=5), children, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=4,
    ).map(json.dumps),
    st.sampled_from(
        [
            '{"type":"resume"}',
            '{"type":"resume","last_id":null}',
            '{"type":"resume","last_id":"../../"}',
            '{"type":"mark-read","ids":[{}]}',
            '{"type":"ping","data":' + "[" * 200 + "]" * 200 + "}",
            "[" * 50_000,  # issue 15: json.loads recursed until RecursionError
            '{"type":"mark-read","ids":' + "[" * 20_000 + "}",
            '{"type":"mark-read","ids":["\\ud800"]}',
            '{"type":"resume","last_id":"\\u00b2"}',
            '{"type":"mark-read","ids":["\\u0663"]}',
        ]
    ),
    st.integers(min_value=1_000, max_value=60_000).map(lambda n: "[" * n),
)


@pytest.mark.gen_test
async def test_a_deeply_nested_frame_gets_an_error_envelope_and_the_socket_stays(ws_connect, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    for frame in ("[" * 50_000, '{"type":"mark-read","ids":' + "[" * 30_000 + "]" * 30_000 + "}"):
        sock.conn.write_message(frame)
        answer = await sock.recv_json()
        assert answer["type"] == "error", answer
    sock.send_json({"type": "ping"})
    assert (await sock.recv_json())["type"] == "pong"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(frames, min_size=1, max_size=20))
def test_random_frames_get_error_envelopes_and_never_break_the_socket(
    io_loop, http_server, base_url, make_user, batch
):
    # A user per example: its resumes spend the user's budget (up to 20 here, under 40), so
    # sharing a user across examples would soon refuse the handshake with a 429.
    user = make_user(prefix="fuzz")

    async def scenario() -> None:
        conn = await websocket_connect(
            base_url.replace("http", "ws") + f"/ws?format=json&token={user.token}"
        )
        try:
            assert json.loads(await conn.read_message())["type"] == "connection-established"
            for frame in batch:
                conn.write_message(frame, binary=isinstance(frame, bytes))
            conn.write_message('{"type":"ping"}')
            seen = []
            while not seen or seen[-1] != "pong":
                raw = await conn.read_message()
                assert raw is not None, f"closed: {conn.close_code} after {seen}"
                seen.append(json.loads(raw)["type"])
            assert set(seen) <= {"error", "pong", "system-message"}, seen
        finally:
            conn.close()

    io_loop.run_sync(scenario, timeout=30)


FUZZ_ROUNDS, SOCKETS_PER_ROUND, FRAMES_PER_SOCKET = 3, 25, 90  # 90 + a ping: under the limit


@pytest.fixture
def fresh_user(make_user: Any) -> Any:
    """A user for the next socket: a new one every 20 sockets, within one user's handshake
    budget (notifier/realtime/socket_limit.py), so these tests test frames, not budgets."""
    users: list[Any] = []
    count = [0]

    def next_user() -> Any:
        if count[0] % 20 == 0:
            users.append(make_user(prefix="fuzz"))
        count[0] += 1
        return users[-1]

    return next_user


def junk(rng: random.Random) -> str | bytes:
    """A frame that is not a message of ours (each gets exactly one error envelope)."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if kind == 1:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 500)))
    if kind == 2:
        return json.dumps({"type": "x" * rng.randrange(1, 50), "data": rng.random()})
    if kind == 3:
        return "[" * rng.randrange(1, 500) + "]" * rng.randrange(1, 500)
    return json.dumps([rng.random() for _ in range(rng.randrange(1, 800))])


def rss(pid: int) -> int:
    """The process's resident memory in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@pytest.mark.timeout(180)
def test_fuzzed_frames_neither_crash_the_web_process_nor_grow_its_memory(env, fresh_user):
    """Thousands of junk frames over many sockets: the process answers each with an error
    and, once warmed up, holds no more memory after another 6,750 than before them."""
    web = WebProcess(env)
    web.start()
    rng = random.Random(2026)

    def fuzz_round() -> None:
        for _ in range(SOCKETS_PER_ROUND):
            url = web.url.replace("http", "ws") + f"/ws?format=json&token={fresh_user().token}"
            with ws_sync.connect(url, max_size=None, compression=None) as sock:
                assert json.loads(sock.recv(10))["type"] == "connection-established"
                for _ in range(FRAMES_PER_SOCKET):
                    sock.send(junk(rng))
                sock.send('{"type":"ping"}')
                errors = 0
                while (answer := json.loads(sock.recv(10)))["type"] != "pong":
                    errors += answer["type"] == "error"  # unread-count may come, on (re)subscribe
                assert errors == FRAMES_PER_SOCKET

    try:
        assert web.proc is not None
        fuzz_round()  # warm-up: caches, connection pools and allocator arenas fill once
        before = rss(web.proc.pid)
        for _ in range(FUZZ_ROUNDS):
            fuzz_round()
        grown = rss(web.proc.pid) - before
        frames = FUZZ_ROUNDS * SOCKETS_PER_ROUND * FRAMES_PER_SOCKET
        print(f"RSS {before / 2**20:.1f} MiB, then {grown / 1024:+.0f} KiB after {frames} frames")
        assert web.proc.poll() is None
        assert grown < 2**20
    finally:
        web.stop()
