"""WS /ws: authenticated before the upgrade; the protocol on an open socket."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from tornado.httpclient import HTTPClientError

from notifier.accounts.auth import issue_token
from notifier.notifications.store import NotificationWriter, format_id
from tests.conftest import JWT_SECRET


def claims_for(user, **overrides):
    now = int(time.time())
    return {
        "sub": user.user_id,
        "username": user.username,
        "role": user.role,
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda u: None, id="no-token"),
        pytest.param(lambda u: "not-a-jwt", id="garbage"),
        pytest.param(
            lambda u: jwt.encode(claims_for(u), "wrong-secret-" + "w" * 40, algorithm="HS256"),
            id="bad-signature",
        ),
        pytest.param(
            lambda u: jwt.encode(
                claims_for(u, exp=int(time.time()) - 5), JWT_SECRET, algorithm="HS256"
            ),
            id="expired",
        ),
        pytest.param(lambda u: jwt.encode(claims_for(u), None, algorithm="none"), id="alg-none"),
        pytest.param(lambda u: u.token[:-3] + "abc", id="tampered"),
    ],
)
async def test_handshake_without_a_valid_token_is_refused_with_401(ws_connect, alice, make_token):
    token = make_token(alice)
    query = "?format=json" + (f"&token={token}" if token else "")
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(query)
    assert refused.value.code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"


@pytest.mark.gen_test
async def test_handshake_with_an_unknown_format_is_refused(ws_connect, alice):
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(f"?format=xml&token={alice.token}")
    assert refused.value.code == 400


@pytest.mark.gen_test
async def test_connection_established_carries_the_user_and_unread_count(ws_connect, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}", established=False)
    hello = await sock.recv_type("connection-established")
    assert hello["data"] == {
        "user_id": alice.user_id,
        "username": alice.username,
        "role": "shopper",
        "unread_count": 0,
    }
    assert hello["timestamp"].endswith("Z")


@pytest.mark.gen_test
async def test_html_format_greets_with_live_status_and_badge(ws_connect, alice):
    sock = await ws_connect(f"?format=html&token={alice.token}")
    hello = await sock.recv()
    assert 'id="live-status"' in hello and 'hx-swap-oob="true"' in hello
    assert 'id="unread-badge"' in hello


@pytest.mark.gen_test
async def test_cookie_authenticates_the_handshake(ws_connect, alice):
    sock = await ws_connect("?format=json", headers={"Cookie": f"accessToken={alice.token}"})
    sock.send_json({"type": "ping"})
    assert (await sock.recv_json())["type"] == "pong"


@pytest.mark.gen_test
async def test_ping_pong_and_errors_keep_the_socket_open(ws_connect, alice):
    sock = await ws_connect(f"?format=json&token={alice.token}")
    for bad in ("not json", "[]", '{"type": "launch-missiles"}', "{}", '"ping"'):
        sock.conn.write_message(bad)
        error = await sock.recv_type("error")
        assert error["data"]["code"] == "unknown_message"
    sock.send_json({"type": "ping"})
    await sock.recv_type("pong")


@pytest.mark.gen_test
async def test_a_token_that_expires_on_an_open_socket_closes_it_with_4001(
    ws_connect, config, alice
):
    token = issue_token(config.jwt_secret, alice.user_id, alice.username, "shopper", ttl=3)
    sock = await ws_connect(f"?format=json&token={token}")
    code, reason = await sock.closed(timeout=10)
    assert (code, reason) == (4001, "token expired")


@pytest.mark.gen_test
async def test_compression_is_not_negotiated(http_server, base_url, alice):
    from tornado.websocket import websocket_connect

    url = base_url.replace("http", "ws") + f"/ws?format=json&token={alice.token}"
    conn = await websocket_connect(url, compression_options={})  # offers permessage-deflate
    try:
        assert "permessage-deflate" not in conn.headers.get("Sec-WebSocket-Extensions", "")
    finally:
        conn.close()


@pytest.mark.gen_test
async def test_mark_read_on_a_socket_reaches_every_tab_and_touches_only_the_users_own(
    ws_connect, db, alice, bob
):
    writer = NotificationWriter(db)
    note = {"message": "note", "severity": "info"}
    mine = [
        format_id(writer.create(alice.user_id, "system-message", note)["seq"]) for _ in range(3)
    ]
    theirs = format_id(writer.create(bob.user_id, "system-message", note)["seq"])
    tab = await ws_connect(f"?format=json&token={alice.token}")
    other_tab = await ws_connect(f"?format=json&token={alice.token}")

    tab.send_json({"type": "mark-read", "ids": [mine[0], theirs]})
    for sock in (tab, other_tab):
        read = await sock.recv_type("notification-read")
        assert read["data"] == {"ids": [mine[0]], "unread_count": 2}
    assert writer.unread_count(bob.user_id) == 1

    for bad in ({"ids": "all"}, {"ids": []}, {"ids": ["12"]}, {"all": False}, {"ids": [{}]}):
        tab.send_json({"type": "mark-read", **bad})
        error = await tab.recv_type("error")
        assert error["data"]["code"] == "invalid_input"
    assert writer.unread_count(alice.user_id) == 2

    other_tab.send_json({"type": "mark-read", "all": True})
    for sock in (tab, other_tab):
        read = await sock.recv_type("notification-read")
        assert sorted(read["data"]["ids"]) == mine[1:] and read["data"]["unread_count"] == 0
