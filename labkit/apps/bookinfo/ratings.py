"""Bookinfo's ratings service, v1 (istio/istio samples/bookinfo/src/ratings/ratings.js).

- ``GET /ratings/{id}`` — ``{"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}``, or what
  was last posted for that id.
- ``POST /ratings/{id}`` with ``{"Reviewer1": n, ...}`` — keeps those ratings in memory (v1's
  "used to demonstrate POST functionality") and answers them as GET would.
- A non-numeric id is 400 ``{"error": "please provide numeric product ID"}``; a body that is
  not JSON is 400 ``{"error": "please provide valid ratings JSON"}``.
- ``GET /health`` — ``{"status": "Ratings is healthy"}``.

SERVICE_VERSION=v2 reads the ratings from MongoDB or MySQL, which labkit does not run: the app
stops with a message instead.

Run it: PORT=9080 python -m labkit.apps.bookinfo.ratings
"""

from __future__ import annotations

import asyncio
import json
import os
import re

from labkit import http1
from labkit.apps.serve import answering, serve_until_signalled

_JSON = "application/json"
_RATINGS_PATH = re.compile(r"/ratings/[0-9]*")  # ratings.js dispatcher: /^\/ratings\/[0-9]*/
_posted: dict[int, dict[str, object]] = {}


def _json(status: int, payload: object) -> tuple[int, str, bytes]:
    return status, _JSON, json.dumps(payload).encode()


def ratings_of(product_id: int) -> dict[str, object]:
    """getLocalReviews: what was posted for the id, else 5 and 4 stars."""
    return _posted.get(product_id) or {"id": product_id,
                                       "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


async def answer(request: http1.Request) -> tuple[int, str, bytes]:
    path = request.target.split("?", 1)[0]
    if path == "/health" and request.method == "GET":
        return _json(200, {"status": "Ratings is healthy"})
    if _RATINGS_PATH.match(path) and request.method in ("GET", "POST"):
        raw = path.rsplit("/", 1)[-1]
        digits = re.match(r"[0-9]+", raw)  # JavaScript's parseInt of the last segment
        if digits is None:
            return _json(400, {"error": "please provide numeric product ID"})
        product_id = int(digits.group())
        if request.method == "GET":
            return _json(200, ratings_of(product_id))
        try:
            posted = json.loads(request.body)
        except ValueError:
            return _json(400, {"error": "please provide valid ratings JSON"})
        _posted[product_id] = {"id": product_id, "ratings": posted}
        return _json(200, ratings_of(product_id))
    return _json(404, {"error": f"{request.method} {path} not found"})


async def main() -> None:
    if os.environ.get("SERVICE_VERSION", "v1") != "v1":
        raise SystemExit(f"ratings: SERVICE_VERSION={os.environ['SERVICE_VERSION']} is not "
                         "built in: v2 reads a MongoDB or MySQL database, which labkit does not "
                         "run; only v1 (in-memory ratings) is")
    await serve_until_signalled(answering(answer))


if __name__ == "__main__":
    asyncio.run(main())
