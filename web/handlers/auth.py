"""Logging in and out: the login page, the token API, and who am I."""

from __future__ import annotations

import logging
from typing import Any

from redis import RedisError

from notifier import validation
from notifier.accounts.auth import Credentials, issue_token
from notifier.accounts.login_limit import LoginLimit
from notifier.accounts.revocation import TokenVersions
from notifier.accounts.users import UserRepository
from notifier.errors import TooManyAttempts, Unauthorized
from notifier.realtime import bus
from notifier.realtime.events import LogoutEvent
from web.handlers.base import COOKIE, ApiHandler, BaseHandler
from web.handlers.pages import PageHandler
from web.shapes import Me, Token

log = logging.getLogger(__name__)


async def check_password(
    handler: BaseHandler, username: str, password: str
) -> dict[str, Any] | None:
    """The user if the password is right; 429 (with Retry-After) after too many failures.

    Failures count per (account, address), per address and per account for 15 minutes
    (see notifier.accounts.login_limit); if Redis is down the limit is not enforced
    rather than locking everybody out. Over-long input is refused before it is stored
    or hashed anywhere.
    """
    if len(username) > validation.NAME_LENGTH or len(password) > validation.PASSWORD_LENGTH:
        return None  # no such user can exist, and a long password is a scrypt CPU attack
    validation.storable(username, "username")
    validation.storable(password, "password")
    config = handler.config
    limit: LoginLimit | None = LoginLimit(
        handler.redis, config.login_attempts_per_account, config.login_attempts_per_address
    )
    address = handler.request.remote_ip or "unknown"
    try:
        wait = await limit.retry_after(username, address) if limit else 0
    except (RedisError, OSError) as e:
        log.warning("login rate limit not enforced (redis unavailable: %s)", e)
        wait, limit = 0, None
    if wait:
        raise TooManyAttempts(wait)
    user = await UserRepository(handler.db).authenticate(username, password)
    if limit is not None:
        try:
            await (limit.succeeded if user else limit.failed)(username, address)
        except (RedisError, OSError):
            pass
    return user


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another origin after login."""
    return validation.safe_path(target)


def issue_for(handler: BaseHandler, user: dict[str, Any]) -> str:
    """A token for the user at their current token version."""
    return issue_token(
        handler.config.jwt_secret,
        str(user["_id"]),
        user["username"],
        user["role"],
        handler.config.token_ttl,
        int(user.get("token_version", 0)),
    )


class LoginHandler(PageHandler):
    """GET shows the form; POST checks the password and sets the accessToken cookie."""

    login_required = False

    def get(self) -> None:
        """The login form (or straight on, when already logged in)."""
        if self.identity is not None:
            self.redirect(_safe_next(self.get_query_argument("next", None)))
            return
        self.render_page(
            "pages/login.html",
            next=_safe_next(self.get_query_argument("next", "/")),
            username="",
            error=None,
        )

    async def post(self) -> None:
        """Log in and redirect, or show the form again with an error."""
        username = self.get_body_argument("username", "").strip()
        password = self.get_body_argument("password", "")
        nxt = _safe_next(self.get_body_argument("next", "/"))
        user = None
        if len(username) > validation.NAME_LENGTH:
            username = username[: validation.NAME_LENGTH]  # shown again, never stored
        elif username and password:
            try:
                user = await check_password(self, username, password)
            except TooManyAttempts as e:
                for name, value in e.headers.items():  # Retry-After
                    self.set_header(name, value)
                self.render_page(
                    "pages/login.html",
                    status=e.status,
                    next=nxt,
                    username=username,
                    error=e.message[0].upper() + e.message[1:] + ".",
                )
                return
        if user is None:
            self.render_page(
                "pages/login.html",
                status=401,
                next=nxt,
                username=username,
                error="Wrong username or password.",
            )
            return
        self.set_cookie(
            COOKIE,
            issue_for(self, user),
            httponly=True,
            samesite="Lax",
            # Like _xsrf: https by BASE_URL, or as a trusted proxy says we were reached.
            secure=self.config.base_url.startswith("https") or self.request.protocol == "https",
            max_age=self.config.token_ttl,
        )
        self.redirect(_safe_next(nxt), status=303)


class LogoutHandler(PageHandler):
    """Revoke the user's tokens, clear the cookie, close their sockets on every process."""

    login_required = False

    async def post(self) -> None:
        """Log out and go back to the login page."""
        self.clear_cookie(COOKIE)
        if self.identity is not None:
            # Every token issued before now, this cookie's and any bearer token, stops working.
            try:
                await TokenVersions(self.db, self.redis).revoke(self.user.user_id)
                await bus.publish_async(self.bus, LogoutEvent(user_id=self.user.user_id))
            except (RedisError, OSError) as e:
                # Stored in MongoDB and marked: Redis gets the version, and each web process
                # closes the sockets, once they are back on it (notifier/accounts/revocation.py).
                log.warning("logout: revocation not yet in redis (unavailable: %s)", e)
        self.redirect("/login", status=303)


class TokenHandler(ApiHandler):
    """POST /api/token: a bearer token for a username and password."""

    public = True

    def check_xsrf_cookie(self) -> None:
        """Credentials travel in the body, not in a cookie: nothing to forge."""

    async def post(self) -> None:
        """Exchange credentials for a token."""
        given = Credentials.parse(self.json_body())
        user = await check_password(self, given.username, given.password)
        if user is None:
            raise Unauthorized("wrong username or password", "invalid_credentials")
        token = issue_for(self, user)
        ttl = self.config.token_ttl
        self.write_json(Token(token, "Bearer", ttl))


class MeHandler(ApiHandler):
    """GET /api/me."""

    def get(self) -> None:
        """Who the token speaks for."""
        u = self.user
        self.write_json(Me(u.user_id, u.username, u.role))  # type: ignore[arg-type]


default_handlers = [
    (r"/login", LoginHandler),
    (r"/logout", LogoutHandler),
    (r"/api/token", TokenHandler),
    (r"/api/me", MeHandler),
]
