"""Bookinfo's details service (istio/istio samples/bookinfo/src/details/details.rb).

- ``GET /details/{id}`` — the book's details as JSON (one book, whatever the id); an id that is
  not an integer is 400 ``{"error": "please provide numeric product id"}``.
- ``GET /health`` — ``{"status": "Details is healthy"}``.

details-v2's external book service (ENABLE_EXTERNAL_BOOK_SERVICE=true, a call to
www.googleapis.com) needs the internet, which labkit's samples do not use: asking for it stops
the app with a message rather than answer something else.

Run it: PORT=9080 python -m labkit.apps.bookinfo.details
"""

from __future__ import annotations

import asyncio
import json
import os

from labkit import http1
from labkit.apps.serve import answering, serve_until_signalled

_JSON = "application/json"


def book_details(product_id: int) -> dict[str, object]:
    """details.rb get_book_details without the external service."""
    return {"id": product_id, "author": "William Shakespeare", "year": 1595, "type": "paperback",
            "pages": 200, "publisher": "PublisherA", "language": "English",
            "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}


async def answer(request: http1.Request) -> tuple[int, str, bytes]:
    path = request.target.split("?", 1)[0]
    if path == "/health":
        return 200, _JSON, json.dumps({"status": "Details is healthy"}).encode()
    if path == "/details" or path.startswith("/details/"):
        try:
            # Ruby's Integer() of the last path segment; "/details" alone has none.
            product_id = int(path.rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            return 400, _JSON, json.dumps({"error": "please provide numeric product id"}).encode()
        return 200, _JSON, json.dumps(book_details(product_id)).encode()
    return 404, _JSON, json.dumps({"error": f"path {path!r} not found"}).encode()


async def main() -> None:
    if os.environ.get("ENABLE_EXTERNAL_BOOK_SERVICE") == "true":
        raise SystemExit("details: ENABLE_EXTERNAL_BOOK_SERVICE=true calls www.googleapis.com; "
                         "labkit runs without the internet, so only the built-in book is served")
    await serve_until_signalled(answering(answer))


if __name__ == "__main__":
    asyncio.run(main())
