"""The core without any server: rules, ids, tokens, passwords, settings, registry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from notifier.accounts.auth import (
    InvalidToken,
    _issued_claims,
    hash_password,
    issue_token,
    read_token,
    verify_password,
)
from notifier.errors import InputError
from notifier.formatting import money, relative_time
from notifier.notifications.store import format_id, parse_id
from notifier.realtime.registry import ConnectionRegistry
from notifier.realtime.render import GREETINGS
from notifier.settings import ConfigurationError, Settings
from notifier.shopping.alerts import is_deal
from notifier.shopping.deals import deal_key, deal_message
from notifier.shopping.prices import PriceInput, store_id_for
from notifier.validation import item_key
from web.handlers.pages import form_cents
from web.logs import redact
from web.render import Renderer

SECRET = "unit-test-secret-" + "y" * 32


@pytest.mark.parametrize(
    ("price", "regular", "target", "expected"),
    [
        (299, 349, None, True),  # below regular
        (349, 349, None, False),  # at regular is no deal
        (299, 349, 299, True),  # at target
        (300, 349, 299, False),  # below regular but above the user's target
        (349, 349, 400, True),  # at regular but within the target
    ],
)
def test_deal_rule(price: int, regular: int, target: int | None, expected: bool) -> None:
    assert is_deal(price, regular, target) is expected


def test_deal_key_names_item_store_price_and_validity() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    base = {"item_key": "milk", "store_id": "s", "price_in_cents": 1, "valid_until": None}
    assert deal_key(base) != deal_key({**base, "price_in_cents": 2})
    assert deal_key(base) != deal_key({**base, "valid_until": until})
    assert deal_message(2) == "You have 2 new deal(s) on your watched items!"


def test_ids_sort_in_creation_order_and_reject_garbage() -> None:
    ids = [format_id(n) for n in (1, 9, 10, 123456)]
    assert ids == sorted(ids)
    assert parse_id(format_id(42)) == 42
    for bad in ("42", "abc", "", None, 42, "0000000000001x", "-00000000001"):
        with pytest.raises(InputError):
            parse_id(bad)


def test_passwords_hash_with_salt_and_verify() -> None:
    h1, h2 = hash_password("s3cret"), hash_password("s3cret")
    assert h1 != h2 and h1.startswith("scrypt$")
    assert verify_password("s3cret", h1)
    assert not verify_password("wrong", h1)
    assert not verify_password("s3cret", None)
    assert not verify_password("s3cret", "garbage")


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = issue_token(SECRET, "u1", "alice", "shopper", 60)
    who = read_token(SECRET, token)
    assert (who.user_id, who.username, who.role) == ("u1", "alice", "shopper")
    assert who.expires_at > time.time()
    with pytest.raises(InvalidToken):
        read_token("another-secret-" + "z" * 32, token)
    with pytest.raises(InvalidToken):
        read_token(SECRET, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u1", "username": "a", "iat": 0},  # no exp
        {"sub": "u1", "username": "a", "exp": 2**31},  # no iat
        {"username": "a", "iat": 0, "exp": 2**31},  # no sub
        {"sub": "u1", "username": "a", "iat": 0, "exp": 1},  # expired
    ],
)
def test_tokens_need_sub_iat_and_a_future_exp(claims: dict[str, object]) -> None:
    with pytest.raises(InvalidToken):
        read_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_alg_none_and_other_algorithms_are_refused() -> None:
    claims = {"sub": "u1", "username": "a", "iat": 0, "exp": 2**31}
    with pytest.raises(InvalidToken):
        read_token(SECRET, jwt.encode(claims, None, algorithm="none"))
    long_secret = SECRET * 2  # HS512 wants 64 bytes; the point is that we refuse HS512
    with pytest.raises(InvalidToken):
        read_token(long_secret, jwt.encode(claims, long_secret, algorithm="HS512"))


def test_issued_tokens_are_read_without_pyjwt_and_as_pyjwt_reads_them() -> None:
    token = issue_token(SECRET, "u1", "alice", "admin", 60, version=3)
    fast = _issued_claims(SECRET, token)
    assert fast is not None  # the fast path is taken: PyJWT costs a tenth of a handshake
    assert fast == jwt.decode(token, SECRET, algorithms=["HS256"])
    who = read_token(SECRET, token)
    assert (who.user_id, who.username, who.role, who.version) == ("u1", "alice", "admin", 3)


def _tokens_pyjwt_judges() -> list[object]:
    now = int(time.time())
    good = {"sub": "u1", "username": "a", "role": "shopper", "iat": now, "exp": now + 60}
    token = jwt.encode(good, SECRET, algorithm="HS256")
    head, payload, sig = token.split(".")
    other_header = jwt.encode(good, SECRET, algorithm="HS256", headers={"kid": "1"})
    return [
        pytest.param(token + "=", id="padded-signature"),
        pytest.param(f"{head}.{payload}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}", id="bad-sig"),
        pytest.param(jwt.encode(good, "another-" + SECRET, algorithm="HS256"), id="other-secret"),
        pytest.param(jwt.encode({**good, "exp": now - 1}, SECRET, algorithm="HS256"), id="expired"),
        pytest.param(jwt.encode({**good, "iat": now + 60}, SECRET, algorithm="HS256"), id="future"),
        pytest.param(jwt.encode({**good, "aud": "x"}, SECRET, algorithm="HS256"), id="audience"),
        pytest.param(
            jwt.encode({**good, "jti": "j1"}, SECRET, algorithm="HS256"), id="more-claims"
        ),
        pytest.param(
            jwt.encode({**good, "exp": str(now + 60)}, SECRET, algorithm="HS256"), id="str"
        ),
        pytest.param(jwt.encode({**good, "sub": 7}, SECRET, algorithm="HS256"), id="int-sub"),
        pytest.param(other_header, id="other-header"),
        pytest.param(jwt.encode(good, None, algorithm="none"), id="alg-none"),
        pytest.param(f"{head}.{payload}.{payload}.{sig}", id="four-segments"),
        pytest.param(token.replace(".", ".é", 1), id="not-ascii"),
    ]


@pytest.mark.parametrize("token", _tokens_pyjwt_judges())
def test_any_other_token_is_left_to_pyjwt(token: str) -> None:
    assert _issued_claims(SECRET, token) is None
    try:
        expected: object = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["exp", "iat", "sub"]}
        )
    except jwt.PyJWTError:
        expected = InvalidToken
    try:
        got: object = read_token(SECRET, token)
    except InvalidToken:
        got = InvalidToken
    assert (got is InvalidToken) == (expected is InvalidToken)


def test_the_html_greeting_is_rendered_once_per_unread_count_and_stays_bounded() -> None:
    renderer = Renderer()
    me = {"user_id": "u1", "username": "alice", "role": "shopper"}
    for unread in (0, 3, 0, 3, 12):
        greeting = renderer.connected(me, unread, "html")
        assert greeting == renderer.render("fragments/live_connected.html", unread_count=unread)
        assert f'aria-label="{unread} unread"' in greeting
    for unread in range(GREETINGS + 10):
        renderer.connected(me, unread, "html")
    assert len(renderer._greetings) <= GREETINGS


def test_production_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SECRET, MONGODB_URI, REDIS_URL"):
        Settings.from_env({"NOTIFIER_ENV": "production", "VAR_DIR": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        Settings.from_env(
            {
                "NOTIFIER_ENV": "production",
                "JWT_SECRET": "x" * 40,
                "MONGODB_URI": "mongodb://db/x",
                "VAR_DIR": str(tmp_path),
            }
        )


def test_production_refuses_a_short_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        Settings.from_env(
            {
                "NOTIFIER_ENV": "production",
                "JWT_SECRET": "short",
                "MONGODB_URI": "mongodb://db/x",
                "REDIS_URL": "redis://r",
                "VAR_DIR": str(tmp_path),
            }
        )


def test_development_keeps_one_generated_secret(tmp_path: Path) -> None:
    first = Settings.from_env({"VAR_DIR": str(tmp_path)})
    again = Settings.from_env({"VAR_DIR": str(tmp_path)})
    assert first.jwt_secret == again.jwt_secret and len(first.jwt_secret) >= 40
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o077 == 0
    given = Settings.from_env({"VAR_DIR": str(tmp_path), "JWT_SECRET": "given-" + "q" * 40})
    assert given.jwt_secret == "given-" + "q" * 40


def test_settings_reject_non_numbers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PORT"):
        Settings.from_env({"VAR_DIR": str(tmp_path), "PORT": "eighty"})


def test_price_input_validation() -> None:
    good = {
        "store_name": " Fresh  Mart ",
        "item_name": "Milk",
        "price_in_cents": 199,
        "regular_price_in_cents": 249,
    }
    assert PriceInput.parse(good).store_name == "Fresh Mart"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert PriceInput.parse({**good, "valid_until": future}).valid_until is not None
    for bad in (
        [],
        {**good, "price_in_cents": "199"},
        {**good, "price_in_cents": True},
        {**good, "price_in_cents": -1},
        {**good, "price_in_cents": 1.5},
        {**good, "price_in_cents": 300},  # above regular
        {**good, "store_name": ""},
        {**good, "item_name": "x" * 101},
        {**good, "valid_until": "tomorrow"},
        {**good, "valid_until": "2001-01-01T00:00:00Z"},
    ):
        with pytest.raises(InputError):
            PriceInput.parse(bad)


def test_names_normalise() -> None:
    assert item_key("  Oat   MILK ") == "oat milk"
    assert store_id_for("Fresh Mart") == "fresh-mart"
    assert store_id_for("★★").startswith("store-")


def test_money_and_relative_times() -> None:
    assert money(1299) == "$12.99" and money(5) == "$0.05" and money(123456) == "$1,234.56"
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert relative_time("2026-01-01T11:59:30.000Z", now) == "just now"
    assert relative_time("2026-01-01T11:58:00.000Z", now) == "2 minutes ago"
    assert relative_time("2026-01-01T11:00:00.000Z", now) == "1 hour ago"
    assert relative_time("2025-12-30T12:00:00.000Z", now) == "2 days ago"


def test_form_amounts() -> None:
    assert form_cents("2.49", "Price") == 249
    assert form_cents("$3", "Price") == 300
    assert form_cents("0.5", "Price") == 50
    assert form_cents("", "Price") is None
    for bad in ("2.499", "abc", "-1", "1e3", ".5", "99999999"):
        with pytest.raises(InputError):
            form_cents(bad, "Price")


def test_tokens_are_redacted_from_logged_urls() -> None:
    assert redact("/ws?format=json&token=abc.def.ghi") == "/ws?format=json&token=[redacted]"
    assert redact("/ws?token=abc&x=1") == "/ws?token=[redacted]&x=1"


class Recorder:
    """A connection that records what it was sent (the registry's Connection protocol)."""

    def __init__(self, user_id: str, fmt: str = "json", alive: bool = True) -> None:
        self.user_id, self.format, self.alive = user_id, fmt, alive
        self.socket_id = f"test:{id(self)}"
        self.sent: list[str] = []
        self.closed: tuple[int | None, str | None] | None = None

    def send(self, payload: str) -> bool:
        if self.alive:
            self.sent.append(payload)
        return self.alive

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = (code, reason)


def test_registry_renders_once_per_format_and_isolates_users() -> None:
    registry = ConnectionRegistry()
    a1, a2, a3, b = Recorder("a"), Recorder("a"), Recorder("a", "html"), Recorder("b")
    for c in (a1, a2, a3, b):
        registry.add(c)
    renders: list[str] = []

    def render(fmt: str) -> str:
        renders.append(fmt)
        return f"<{fmt}>"

    assert registry.send_to_user("a", render) == 3
    assert sorted(renders) == ["html", "json"]
    assert a1.sent == a2.sent == ["<json>"] and a3.sent == ["<html>"] and b.sent == []
    assert registry.stats() == {"connections": 4, "users": 2}


def test_registry_drops_empty_users_and_survives_dead_sockets() -> None:
    registry = ConnectionRegistry()
    dead, live = Recorder("a", alive=False), Recorder("a")
    registry.add(dead)
    registry.add(live)
    assert registry.send_to_user("a", lambda fmt: "m") == 1
    assert live.sent == ["m"]
    registry.remove(dead)
    registry.remove(live)
    registry.remove(live)  # twice is harmless
    assert registry.stats() == {"connections": 0, "users": 0}
    assert registry.connections_for_user("a") == []


def test_registry_closes_one_users_sockets() -> None:
    registry = ConnectionRegistry()
    a, b = Recorder("a"), Recorder("b")
    registry.add(a)
    registry.add(b)
    registry.close_user("a", 4002, "logged out")
    assert a.closed == (4002, "logged out") and b.closed is None
