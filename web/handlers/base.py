"""The base handler: shared clients as typed properties, authentication, JSON errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Any, Generic, TypeGuard, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError
from redis import RedisError
from tornado.web import HTTPError, RequestHandler

from notifier.accounts.auth import Identity, InvalidToken, read_token
from notifier.accounts.revocation import GONE, TokenVersions
from notifier.errors import (
    Forbidden,
    InputError,
    NotifierError,
    Unauthorized,
    Unavailable,
    error_body,
)
from notifier.logs import REQUEST_ID, USER_ID
from notifier.realtime.bus import AsyncBusClient
from notifier.realtime.registry import ConnectionRegistry
from notifier.settings import Settings
from web.logs import redact
from web.render import Renderer
from web.server import SECURITY_HEADERS, content_security_policy
from web.taskqueue import TaskQueue, broker_unreachable

# MongoDB or Redis could not be reached, or answered too late: the request gets a 503,
# and the next one works once the server is back. So does the task queue (on Redis):
# `is_outage` checks it too.
OUTAGES = (
    ConnectionFailure,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_outage(exc: BaseException | None) -> TypeGuard[BaseException]:
    """True when `exc` is MongoDB, Redis or the task queue out of reach (a 503)."""
    return isinstance(exc, OUTAGES) or (exc is not None and broker_unreachable(exc))


log = logging.getLogger(__name__)

COOKIE = "accessToken"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def security_headers(handler: RequestHandler) -> None:
    """The headers every answer carries (pages, JSON, static files and errors)."""
    for name, value in SECURITY_HEADERS.items():
        handler.set_header(name, value)
    config: Settings = handler.settings["config"]
    handler.set_header("Content-Security-Policy", content_security_policy(config.base_url))
    handler.set_header("Server", "notifier")  # not Tornado's name and version


T = TypeVar("T")


class AppSetting(Generic[T]):
    """A handler attribute that reads one of the application's settings (web/app.py), typed."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, handler: RequestHandler, owner: type | None = None) -> T:
        value: T = handler.settings[self.key]
        return value


class BaseHandler(RequestHandler):
    """Every handler: typed access to Application.settings and who is asking."""

    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The caller's X-Request-Id when it is sane (a proxy's), else a new one."""
        if self._request_id is None:
            given = self.request.headers.get("X-Request-Id", "")
            self._request_id = given if _SANE_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
            # Set while the handler is built, so the request's task (and what it starts) sees it.
            REQUEST_ID.set(self._request_id)
        return self._request_id

    def set_default_headers(self) -> None:
        """Every answer names its request id and has the security headers (errors too)."""
        self.set_header("X-Request-Id", self.request_id)
        security_headers(self)

    # Typed access to Application.settings (web/app.py).
    config = AppSetting[Settings]("config")  # the notifier settings
    db = AppSetting[AsyncDatabase[dict[str, Any]]]("db")  # MongoDB, PyMongo's asyncio API
    redis = AppSetting[aioredis.Redis]("redis")  # the asyncio Redis client
    bus = AppSetting[AsyncBusClient]("bus")  # what the bus publishes through (realtime.bus)
    registry = AppSetting[ConnectionRegistry]("registry")  # this process's open sockets
    renderer = AppSetting[Renderer]("renderer")  # pages and fragments

    @property
    def identity(self) -> Identity | None:
        """Who is asking, from a Bearer token or the accessToken cookie; None if nobody."""
        user: Identity | None = self.current_user
        return user

    def get_current_user(self) -> Identity | None:
        """Nobody, unless prepare() authenticated the request (see authenticate)."""
        return None

    async def prepare(self) -> None:
        """Find out who is asking before any handler method runs."""
        await self.authenticate()

    async def authenticate(self) -> Identity | None:
        """The token's identity when it is signed, unexpired and not revoked; else None."""
        identity = self.read_token()
        if identity is not None and not await self.token_is_current(identity):
            identity = None
        self.current_user = identity
        if identity is not None:
            USER_ID.set(identity.user_id)
        return identity

    def read_token(self) -> Identity | None:
        """The bearer token, else the cookie (`?token=` is for /ws only), if validly signed."""
        token = self.request_token()
        if not token:
            return None
        try:
            return read_token(self.config.jwt_secret, token)
        except InvalidToken:
            return None

    async def token_is_current(self, identity: Identity) -> bool:
        """Whether no logout, password change or role change revoked the token since.

        If Redis (or, on a cache miss, MongoDB) cannot be asked, the token is taken as
        current: signed tokens still expire, and a Redis outage must not log everyone out.
        """
        try:
            current = await TokenVersions(self.db, self.redis).current(identity.user_id)
        except (RedisError, OSError, PyMongoError) as e:
            log.warning("token revocation not checked (storage unavailable: %s)", e)
            return True
        return current != GONE and identity.version >= current

    def request_token(self) -> str | None:
        """The token this request carries, if any."""
        header = self.request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer ") :].strip()
        return self.get_cookie(COOKIE)

    def check_xsrf_cookie(self) -> None:
        """Bearer-token calls carry no ambient credentials, so they need no XSRF token."""
        if self.request.headers.get("Authorization", "").startswith("Bearer "):
            return
        super().check_xsrf_cookie()

    async def enqueue(self, task: str, task_id: str | None = None, **kwargs: Any) -> str:
        """Send a Celery task by name (the web process does not import the tasks)."""
        tasks: TaskQueue = self.settings["tasks"]
        return await asyncio.to_thread(tasks.send, task, kwargs, task_id)

    # Errors ------------------------------------------------------------------------------

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """An error raised by the core carries its own status: bad input is never a 500."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, NotifierError):
            status_code = exc.status
        elif is_outage(exc):
            status_code = 503
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Like Tornado's, but never with the query string's secrets, and brief for bad input."""
        where = f"{self.request.method} {redact(self.request.uri or '')}"
        if isinstance(value, NotifierError):
            log.info("%s: %s", where, value.message)
        elif is_outage(value):
            log.warning("503 %s: %s (%s)", where, _outage(value), type(value).__name__)
        elif isinstance(value, HTTPError):
            if value.log_message:
                message = value.log_message % value.args if value.args else value.log_message
                log.warning("%d %s: %s", value.status_code, where, message)
        else:
            log.error("Uncaught exception %s", where, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as the contract's JSON; subclasses for pages override this."""
        error = self.error_of(status_code, kwargs.get("exc_info"))
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(error))

    def error_of(self, status: int, exc_info: Any) -> NotifierError:
        """What failed, in the one vocabulary, with its headers set on the answer."""
        error = as_error(status, exc_info[1] if exc_info else None, self._reason)
        if status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        for name, value in error.headers.items():  # set here: send_error cleared the rest
            self.set_header(name, value)
        return error

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this handler answers."""
        return [
            m
            for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if getattr(cls, m.lower()) is not getattr(RequestHandler, m.lower())
        ]

    # JSON helpers ------------------------------------------------------------------------

    def json_body(self) -> object:
        """The request body as JSON; InputError when it is not."""
        try:
            return json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # "[" * 50_000 recurses
            raise InputError("the body must be valid JSON", "invalid_json") from None

    def write_json(self, value: Any, status: int = 200) -> None:
        """Finish with a JSON answer."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if isinstance(value, msgspec.Struct):  # a shape of the API (web/shapes.py, the core's)
            value = msgspec.to_builtins(value)
        self.finish(json.dumps(value, separators=(",", ":")))


class ApiHandler(BaseHandler):
    """JSON API handlers: authentication required unless `public`; `admin_only` for admins."""

    public = False
    admin_only = False

    def check_xsrf_cookie(self) -> None:
        """Only a request carrying the session cookie can be forged; others get their 401."""
        if self.get_cookie(COOKIE) is None:
            return
        super().check_xsrf_cookie()

    async def prepare(self) -> None:
        """Refuse unauthenticated (401) and non-admin (403) callers before any work."""
        await self.authenticate()
        if self.public:
            return
        if self.identity is None:
            raise Unauthorized("a valid token is required")
        if self.admin_only and not self.identity.is_admin:
            raise Forbidden("this needs the admin role")

    @property
    def user(self) -> Identity:
        """The authenticated caller (prepare guarantees one)."""
        assert self.identity is not None
        return self.identity


def as_error(status: int, exc: BaseException | None, reason: str) -> NotifierError:
    """Any failure as a NotifierError: the core's own, an outage, or Tornado's HTTPError."""
    if isinstance(exc, NotifierError):
        return exc
    if is_outage(exc):
        return Unavailable(f"{_outage(exc)}; try again shortly")
    if isinstance(exc, HTTPError) and exc.log_message and status < 500:
        message = exc.log_message % exc.args if exc.args else exc.log_message
        code = "xsrf" if "_xsrf" in message or "XSRF" in message else _CODES.get(status, "error")
        return NotifierError(message, code)
    return NotifierError(reason, _CODES.get(status, "error"))


def _outage(exc: BaseException) -> str:
    """Which storage an outage is (never the driver's message: it may name hosts)."""
    if isinstance(exc, ConnectionFailure):
        return "MongoDB is unavailable"
    return "the task queue is unavailable" if broker_unreachable(exc) else ("Redis is unavailable")


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    500: "internal_error",
    503: "unavailable",
}
