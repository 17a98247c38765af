"""Bookinfo's productpage (istio/istio samples/bookinfo/src/productpage/productpage.py).

- ``GET /productpage`` — the book page: calls details (``GET /details/0``) and reviews
  (``GET /reviews/0``) and renders both (labkit.apps.bookinfo.page).
- ``POST /login`` (form field ``username``) — signs the user in for this browser: a ``session``
  cookie, then a redirect back (302 to the Referer); ``GET /logout`` signs out. A signed-in
  user's calls carry ``end-user: <name>``, what the request-routing and fault-injection tasks
  match (``headers: {end-user: {exact: jason}}``).
- ``GET /api/v1/products``, ``/api/v1/products/{id}``, ``.../reviews``, ``.../ratings`` — the
  JSON API, each calling the service it names.
- ``GET /health`` — ``Product page is healthy``; ``GET /`` — an index linking the page.

Its hard-coded client behaviour, which the Istio tasks rely on: each call has a 3 s timeout
(`requests.get(url, headers=headers, timeout=3.0)`), and reviews is tried twice ("Do not remove.
Bug introduced explicitly for illustration in fault injection task"), so a reviews call that
hangs fails the page after 6 s, and one that times out at the mesh after 0.5 s fails it after
1 s (the request-timeouts task). Trace headers, `user-agent`, `cookie`, `authorization` and
`jwt` are passed on as getForwardHeaders does.

Flask keeps the user in a session cookie signed with the app's (hard-coded) secret key; here the
cookie is the user name in base64-encoded JSON, unsigned: nothing in the tasks depends on the
signature.

Run it: PORT=9080 python -m labkit.apps.bookinfo.productpage
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from labkit import http1
from labkit.apps.bookinfo.page import PRODUCT, productpage_html
from labkit.apps.bookinfo.upstream import TRACE_HEADERS, forwarded, get_json, service_url
from labkit.apps.serve import Reply, answering, serve_until_signalled

__all__ = ["CALL_TIMEOUT", "REVIEWS_TRIES", "answer", "session_cookie", "session_user"]

CALL_TIMEOUT = 3.0
"""Seconds productpage waits for each call (requests' timeout=3.0)."""
REVIEWS_TRIES = 2
"""getProductReviews: `for _ in range(2)`."""
FORWARDED = (*TRACE_HEADERS, "user-agent", "cookie", "authorization", "jwt")
_SESSION = "session"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_API = re.compile(r"/api/v1/products/([^/]+)(/reviews|/ratings)?")
DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Sorry, product ratings are currently unavailable for this book."


def session_cookie(user: str) -> str:
    """The `session` cookie's value for a signed-in user."""
    return base64.urlsafe_b64encode(json.dumps({"user": user}).encode()).decode()


def session_user(cookie_header: str | None) -> str:
    """The signed-in user named by the request's cookies ("" when none or unreadable)."""
    try:
        morsel = SimpleCookie(cookie_header or "").get(_SESSION)
        user = json.loads(base64.urlsafe_b64decode(morsel.value)).get("user") if morsel else ""
    except (CookieError, ValueError, binascii.Error, AttributeError):
        return ""
    return user if isinstance(user, str) else ""


async def _call(url: str, headers: Mapping[str, str], unavailable: str,
                tries: int = 1) -> tuple[int, Any]:
    """(200, JSON) from the first try that answers 200; else the last status (500 when nothing
    answered) and the page's error text, as getProductDetails/Reviews/Ratings do."""
    answer = None
    for _ in range(tries):
        answer = await get_json(url, headers, CALL_TIMEOUT)
        if answer is not None and answer[0] == 200:
            return 200, answer[1]
    return (answer[0] if answer is not None else 500), {"error": unavailable}


def _urls(product_id: str) -> dict[str, str]:
    env = os.environ
    return {name: service_url(f"{name.upper()}_HOSTNAME", name, f"/{name}/{product_id}", env)
            for name in ("details", "reviews", "ratings")}


def _headers(request: http1.Request) -> dict[str, str]:
    headers = forwarded(request.headers, FORWARDED)
    if user := session_user(request.header("cookie")):
        headers["end-user"] = user
    return headers


async def _page(request: http1.Request) -> Reply:
    headers, urls = _headers(request), _urls("0")
    details = await _call(urls["details"], headers, DETAILS_UNAVAILABLE)
    reviews = await _call(urls["reviews"], headers, REVIEWS_UNAVAILABLE, REVIEWS_TRIES)
    html = productpage_html(session_user(request.header("cookie")), details, reviews)
    return 200, _HTML, html.encode()


async def _api(product_id: str, what: str | None, request: http1.Request) -> Reply:
    name = (what or "/details").lstrip("/")
    unavailable = {"details": DETAILS_UNAVAILABLE, "reviews": REVIEWS_UNAVAILABLE,
                   "ratings": RATINGS_UNAVAILABLE}[name]
    status, doc = await _call(_urls(product_id)[name], _headers(request), unavailable,
                              REVIEWS_TRIES if name == "reviews" else 1)
    return status, _JSON, json.dumps(doc).encode()


def _back(request: http1.Request) -> str:
    return request.header("referer") or "/productpage"


def _login(request: http1.Request) -> Reply:
    # Flask's request.values: the query string's fields first, then the form's.
    fields = {**parse_qs(request.body.decode("utf-8", "replace")),
              **parse_qs(request.target.partition("?")[2])}
    user = (fields.get("username") or [""])[0]
    if not user:
        return 400, _JSON, json.dumps({"error": "login: form field 'username' is missing"}).encode()
    cookie = f"{_SESSION}={session_cookie(user)}; HttpOnly; Path=/"
    return 302, _HTML, b"", [("Location", _back(request)), ("Set-Cookie", cookie)]


async def answer(request: http1.Request) -> Reply:
    path, method = request.target.split("?", 1)[0], request.method
    if path == "/productpage" and method in ("GET", "HEAD"):
        return await _page(request)
    if path == "/login" and method == "POST":
        return _login(request)
    if path == "/logout" and method == "GET":
        cleared = f"{_SESSION}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"
        return 302, _HTML, b"", [("Location", _back(request)), ("Set-Cookie", cleared)]
    if path == "/health":
        return 200, "text/html; charset=utf-8", b"Product page is healthy"
    if path == "/api/v1/products" and method == "GET":
        return 200, _JSON, json.dumps([PRODUCT]).encode()
    if (match := _API.fullmatch(path)) and method == "GET":
        return await _api(match.group(1), match.group(2), request)
    if path in ("/", "/index.html"):
        return 200, _HTML, (b"<!DOCTYPE html>\n<html><head><title>Simple Bookstore App</title>"
                            b"</head><body><h3>Hello! This is a simple bookstore application "
                            b"consisting of three services: productpage, details and reviews "
                            b"(which calls ratings).</h3><p><a href=\"productpage\">Open the "
                            b"product page</a></p></body></html>\n")
    return 404, _JSON, json.dumps({"error": f"{method} {path} not found"}).encode()


async def main() -> None:
    await serve_until_signalled(answering(answer))


if __name__ == "__main__":
    asyncio.run(main())
