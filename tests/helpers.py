"""Small helpers shared by the integration tests."""

from __future__ import annotations

import re
import urllib.parse
from http.cookies import SimpleCookie
from typing import Any

from tornado.httpclient import HTTPResponse


def cookies(response: HTTPResponse) -> SimpleCookie:
    """Every Set-Cookie of a response."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return jar


def set_cookie_header(response: HTTPResponse, name: str) -> str:
    """The raw Set-Cookie header for one cookie."""
    return next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(name + "="))


async def browser_session(fetch: Any) -> tuple[str, str]:
    """What a browser holds after GET /login: (Cookie header value, the form's _xsrf)."""
    page = await fetch("/login")
    xsrf_cookie = cookies(page)["_xsrf"].value
    form_token = re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode())
    assert form_token, "the login form must carry an _xsrf field"
    return f"_xsrf={xsrf_cookie}", form_token.group(1)


async def login(fetch: Any, username: str, password: str) -> tuple[HTTPResponse, dict[str, str]]:
    """Log in through the form; returns the response and headers a browser would send next."""
    cookie, xsrf = await browser_session(fetch)
    body = urllib.parse.urlencode({"_xsrf": xsrf, "username": username, "password": password})
    response = await fetch("/login", "POST", body, headers={"Cookie": cookie})
    jar = cookies(response)
    headers = {"Cookie": cookie, "X-XSRFToken": xsrf}
    if "accessToken" in jar and jar["accessToken"].value:
        headers["Cookie"] = f"{cookie}; accessToken={jar['accessToken'].value}"
    return response, headers


def form(**fields: Any) -> str:
    """A urlencoded form body (lists repeat the field)."""
    return urllib.parse.urlencode(fields, doseq=True)
