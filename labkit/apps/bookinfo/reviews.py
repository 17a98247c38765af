"""Bookinfo's reviews service, v1, v2 and v3 (istio/istio samples/bookinfo/src/reviews/
reviews-application/src/main/java/application/rest/LibertyRestEndpoint.java).

- ``GET /reviews/{id}`` — ``{"id", "podname", "clustername", "reviews": [two reviews]}``. With
  ratings enabled each review carries ``"rating": {"stars": n, "color": STAR_COLOR}``, or
  ``{"error": "Ratings service is currently unavailable"}`` when ratings did not answer 200 in
  time; without them (v1) there is no ``rating``.
- ``GET /health`` — ``{"status": "Reviews is healthy"}``.

The versions differ only by the image's environment (samples/bookinfo/src/docker-bake.hcl build
args, the Dockerfile's ENV): v1 ENABLE_RATINGS=false; v2 true, STAR_COLOR=black; v3 true, red.
The built-in images start this module with the version as its argument, which sets those
variables unless the container's env sets them (a pod's env overrides an image's ENV).

The call to ratings has the hard-coded timeout of the Java client: 10 s for black stars, 2.5 s
for any other colour (`star_color.equals("black") ? 10000 : 2500`). That 10 s is why the
fault-injection task's 7 s delay does not fail reviews v2 but does fail productpage (3 s + 1
retry); v3's 2.5 s is the fix. It goes to `http://$RATINGS_HOSTNAME$SERVICES_DOMAIN:9080`: the
real app takes the port from RATINGS_SERVICE_PORT, the kubelet's link variable, which is 9080 in
a cluster; labkit's link variables hold the Service's local address instead, so 9080 is used.

Run it: PORT=9080 python -m labkit.apps.bookinfo.reviews v2
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit import http1
from labkit.apps.bookinfo.upstream import TRACE_HEADERS, forwarded, get_json, service_url
from labkit.apps.serve import answering, serve_until_signalled

__all__ = ["IMAGE_ENV", "Reviews", "answer"]

IMAGE_ENV: dict[str, dict[str, str]] = {
    "v1": {"SERVICE_VERSION": "v1", "ENABLE_RATINGS": "false", "STAR_COLOR": "black"},
    "v2": {"SERVICE_VERSION": "v2", "ENABLE_RATINGS": "true", "STAR_COLOR": "black"},
    "v3": {"SERVICE_VERSION": "v3", "ENABLE_RATINGS": "true", "STAR_COLOR": "red"},
}
"""Each image's ENV (reviews-wlpcfg/Dockerfile defaults ENABLE_RATINGS=false, STAR_COLOR=black)."""

# headers_to_propagate: the tracing headers plus the application's and the session's own.
FORWARDED = (*TRACE_HEADERS, "end-user", "user-agent", "cookie", "authorization", "jwt")
_JSON = "application/json"
_REVIEWS_PATH = re.compile(r"/reviews/(-?[0-9]+)")
_TEXTS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is "
                  "refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared "
                  "to other plays by Shakespeare."),
)
UNAVAILABLE = "Ratings service is currently unavailable"


@dataclass(frozen=True)
class Reviews:
    """The endpoint's configuration, read from the environment as the Java class does."""

    ratings_enabled: bool
    star_color: str
    ratings_url: str
    pod: str
    cluster: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Reviews:
        # Boolean.valueOf: "true" in any case is true, anything else false.
        return cls(ratings_enabled=env.get("ENABLE_RATINGS", "").lower() == "true",
                   star_color=env.get("STAR_COLOR") or "black",
                   ratings_url=service_url("RATINGS_HOSTNAME", "ratings", "/ratings", env),
                   pod=env.get("HOSTNAME", "null"), cluster=env.get("CLUSTER_NAME", "null"))

    @property
    def ratings_timeout(self) -> float:
        return 10.0 if self.star_color == "black" else 2.5

    async def stars(self, product_id: int, headers: Mapping[str, str]) -> list[int | None]:
        """Reviewer1's and Reviewer2's stars from ratings (None: not available)."""
        answer = await get_json(f"{self.ratings_url}/{product_id}", headers, self.ratings_timeout)
        ratings: Any = answer[1].get("ratings") if answer and answer[0] == 200 \
            and isinstance(answer[1], dict) else None
        if not isinstance(ratings, dict):
            return [None, None]
        return [ratings.get(name) if isinstance(ratings.get(name), int) else None
                for name, _ in _TEXTS]

    def document(self, product_id: int, stars: list[int | None]) -> dict[str, Any]:
        reviews = []
        for (reviewer, text), count in zip(_TEXTS, stars):
            review: dict[str, Any] = {"reviewer": reviewer, "text": text}
            if self.ratings_enabled:
                review["rating"] = ({"stars": count, "color": self.star_color} if count is not None
                                    else {"error": UNAVAILABLE})
            reviews.append(review)
        return {"id": str(product_id), "podname": self.pod, "clustername": self.cluster,
                "reviews": reviews}


async def answer(request: http1.Request, config: Reviews) -> tuple[int, str, bytes]:
    path = request.target.split("?", 1)[0]
    if path == "/health":
        return 200, _JSON, json.dumps({"status": "Reviews is healthy"}).encode()
    if (match := _REVIEWS_PATH.fullmatch(path)) and request.method == "GET":
        product_id = int(match.group(1))
        stars: list[int | None] = [None, None] if not config.ratings_enabled else \
            await config.stars(product_id, forwarded(request.headers, FORWARDED))
        return 200, _JSON, json.dumps(config.document(product_id, stars)).encode()
    return 404, _JSON, json.dumps({"error": f"{request.method} {path} not found"}).encode()


async def main(version: str) -> None:
    if version not in IMAGE_ENV:
        raise SystemExit(f"reviews: version {version!r}: expected one of {', '.join(IMAGE_ENV)}")
    for name, value in IMAGE_ENV[version].items():
        os.environ.setdefault(name, value)
    config = Reviews.from_env(os.environ)
    await serve_until_signalled(answering(lambda request: answer(request, config)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "v1"))
