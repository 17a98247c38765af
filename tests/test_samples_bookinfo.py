"""Istio's Bookinfo tasks (data/manifests/samples/istio/bookinfo*.yaml) run unchanged and do
what their guides say: request routing (jason sees black stars, everyone else none), traffic
shifting (about half red stars, then all), fault injection (the 7 s delay fails the page after
productpage's 3 s + 1 retry; the abort shows "Ratings service is currently unavailable") and
request timeouts (0.5 s at the mesh, twice, then the reviews are unavailable).

One cluster runs Bookinfo for the module; each task test starts from the guides' "Before you
begin" (all traffic to v1) and leaves it so. The timings the guides quote are checked from
below only (a page cannot come before both timeouts passed), and by what the page shows and
what the sidecars logged, never by a bound above; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkit import http1
from labkit.apps.bookinfo import details, productpage, ratings, reviews
from labkit.cluster import LocalCluster
from labkit.core import images
from labkit.manifests import ManifestError, load
from labkit.mesh import flags
from labkit.mesh.control import control_plane

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "manifests" / "samples"
ISTIO = SAMPLES / "istio"
PAGE = "productpage:9080"


# --- the apps, without processes ----------------------------------------------------------------

def run(answer: Any, target: str, method: str = "GET", body: bytes = b"",
        headers: list[tuple[str, str]] | None = None) -> Any:
    return asyncio.run(answer(http1.Request(method, target, "1.1", headers or [], body)))


def test_details_and_ratings_answer_as_the_real_services() -> None:
    status, _, body = run(details.answer, "/details/0")
    assert status == 200 and json.loads(body)["ISBN-10"] == "1234567890"
    assert run(details.answer, "/details/abc")[:1] == (400,)
    assert json.loads(run(details.answer, "/details/abc")[2]) == {
        "error": "please provide numeric product id"}
    assert json.loads(run(ratings.answer, "/ratings/0")[2]) == {
        "id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    assert run(ratings.answer, "/ratings/x")[0] == 400
    assert run(ratings.answer, "/ratings/7", "POST", b"not json")[0] == 400
    posted = run(ratings.answer, "/ratings/7", "POST", b'{"Reviewer1": 1, "Reviewer2": 2}')
    assert json.loads(posted[2])["ratings"] == {"Reviewer1": 1, "Reviewer2": 2}
    assert json.loads(run(ratings.answer, "/ratings/7")[2])["ratings"]["Reviewer1"] == 1


def test_reviews_versions_differ_by_the_image_environment() -> None:
    def config(version: str, **env: str) -> reviews.Reviews:
        return reviews.Reviews.from_env({**reviews.IMAGE_ENV[version], "HOSTNAME": "pod", **env})

    v1, v2, v3 = config("v1"), config("v2"), config("v3")
    assert [c.ratings_enabled for c in (v1, v2, v3)] == [False, True, True]
    assert (v2.star_color, v2.ratings_timeout, v3.star_color, v3.ratings_timeout) == (
        "black", 10.0, "red", 2.5)
    assert config("v2", STAR_COLOR="red").ratings_timeout == 2.5  # the colour sets the timeout
    assert all("rating" not in r for r in v1.document(0, [None, None])["reviews"])
    doc = v3.document(0, [5, None])
    assert [r["rating"] for r in doc["reviews"]] == [
        {"stars": 5, "color": "red"}, {"error": "Ratings service is currently unavailable"}]
    assert v3.ratings_url == "http://ratings:9080/ratings"
    assert config("v3", RATINGS_HOSTNAME="stars", SERVICES_DOMAIN="shop").ratings_url == \
        "http://stars.shop:9080/ratings"
    status, _, body = asyncio.run(reviews.answer(
        http1.Request("GET", "/reviews/0", "1.1", []), v1))
    assert status == 200 and json.loads(body)["podname"] == "pod"


def test_productpage_login_sets_the_session_and_refuses_a_missing_name() -> None:
    status, _, _, fields = run(productpage.answer, "/login", "POST", b"username=jason&passwd=x",
                               [("Referer", "http://productpage:9080/productpage")])
    assert status == 302 and dict(fields)["Location"] == "http://productpage:9080/productpage"
    cookie = dict(fields)["Set-Cookie"].split(";")[0]
    assert productpage.session_user(cookie) == "jason"
    assert productpage.session_user("session=garbage") == ""
    assert productpage.session_user(None) == ""
    status, _, body = run(productpage.answer, "/login", "POST", b"passwd=x")
    assert status == 400 and "username" in json.loads(body)["error"]
    assert run(productpage.answer, "/health")[2] == b"Product page is healthy"


# --- images and the programs the guides start -----------------------------------------------------

def test_bookinfo_images_run_their_apps_and_guides_programs_run_built_in_apps() -> None:
    for name, module, args in (("productpage-v1", "productpage", []), ("details-v1", "details", []),
                               ("reviews-v2", "reviews", ["v2"]), ("ratings-v1", "ratings", [])):
        command = images.image_command(f"docker.io/istio/examples-bookinfo-{name}:1.20.1")
        assert command is not None and command[2:] == [f"labkit.apps.bookinfo.{module}", *args]
    podinfo = images.image_command("labkit/podinfo")
    assert images.container_command("ghcr.io/stefanprodan/podinfo:6.0.0",
                                    ["./podinfo", "--port=9898", "--random-error=false"],
                                    None, {}) == podinfo
    # Another image's program name, or a program not in the table, stays a local command.
    assert images.container_command("labkit/hello", ["./podinfo"], None, {}) == ["./podinfo"]
    with pytest.raises(ValueError, match="cannot honour the argument '--random-error=true'"):
        images.container_command("ghcr.io/stefanprodan/podinfo", ["./podinfo"],
                                 ["--random-error=true"], {})


def test_a_program_argument_labkit_cannot_honour_is_an_error_at_its_field() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
      containers:
      - name: podinfod
        image: ghcr.io/stefanprodan/podinfo:6.0.0
        command: [./podinfo, --port=9898, --random-delay=true]
"""
    with pytest.raises(ManifestError) as caught:
        load(text)
    [error] = caught.value.errors
    assert (error.line, error.path) == (12, "spec.template.spec.containers[0].command")
    assert "'--random-delay=true'" in error.message
    load(text.replace("--random-delay=true", "--random-delay=false"))


def test_the_same_object_at_another_api_version_replaces_it(cluster: LocalCluster) -> None:
    """The request-timeouts guide applies v1alpha3 over the v1 VirtualServices: one object."""
    cluster.apply(ISTIO / "bookinfo-virtual-service-all-v1.yaml")
    cluster.apply(ISTIO / "bookinfo-timeouts-2-reviews-timeout.yaml")
    found = [o for o in cluster.objects() if o.metadata.name == "reviews"]
    assert [o.api_version for o in found] == ["networking.istio.io/v1alpha3"]
    assert cluster.get("vs", "reviews").object.api_version == "networking.istio.io/v1alpha3"


# --- the tasks, live ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bookinfo() -> Iterator[LocalCluster]:
    """Bookinfo with sidecars, the default destination rules and all traffic to v1."""
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply([ISTIO / "injection.yaml", ISTIO / "bookinfo.yaml",
                       ISTIO / "bookinfo-destination-rule-all.yaml",
                       ISTIO / "bookinfo-virtual-service-all-v1.yaml"])
        yield cluster


@pytest.fixture
def task(bookinfo: LocalCluster) -> Iterator[LocalCluster]:
    """A task's cluster; afterwards all traffic to v1 again (every task file only changes the
    `reviews` and `ratings` VirtualServices, which all-v1 sets back)."""
    yield bookinfo
    bookinfo.apply(ISTIO / "bookinfo-virtual-service-all-v1.yaml")


class Browser:
    """Requests to /productpage from a mesh client, keeping the session cookie as a browser."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.sidecar = control_plane(cluster).client("default", "curl")
        self.cookie = ""

    def login(self, user: str) -> None:
        response = httpx.post(self.sidecar.outbound_url + "/login", timeout=30,
                              headers={"host": PAGE, "referer": f"http://{PAGE}/productpage"},
                              data={"username": user, "passwd": "password"})
        assert response.status_code == 302, response.text
        self.cookie = response.headers["set-cookie"].split(";")[0]

    def page(self) -> tuple[str, float]:
        """The page's HTML and the seconds it took."""
        start = time.monotonic()
        cookie = {"cookie": self.cookie} if self.cookie else {}
        response = httpx.get(self.sidecar.outbound_url + "/productpage", timeout=30,
                             headers={"host": PAGE, **cookie})
        assert response.status_code == 200, response.text
        return response.text, time.monotonic() - start


def stars(html: str) -> str:
    """What the reviews show: "none" (v1), "black" (v2), "red" (v3), "ratings unavailable",
    or "reviews unavailable"."""
    if productpage.REVIEWS_UNAVAILABLE in html:
        assert "Error fetching product reviews" in html
        return "reviews unavailable"
    if reviews.UNAVAILABLE in html:
        return "ratings unavailable"
    colors = set(re.findall(r'class="stars text-(\w+)-500"', html))
    assert len(colors) <= 1, colors
    return colors.pop() if colors else "none"


def test_without_routing_rules_the_page_shows_every_reviews_version(task: LocalCluster) -> None:
    task.delete("VirtualService", "reviews")  # bookinfo.yaml alone: the Service's three versions
    browser = Browser(task)
    html, _ = browser.page()
    assert "The Comedy of Errors" in html and "Book Details" in html and "PublisherA" in html
    assert html.count("Reviewer") == 2
    assert {stars(browser.page()[0]) for _ in range(30)} == {"none", "black", "red"}


def test_request_routing_sends_jason_to_v2_and_everyone_else_to_v1(task: LocalCluster) -> None:
    anonymous, jason, other = Browser(task), Browser(task), Browser(task)
    jason.login("jason")
    other.login("alice")
    assert {stars(anonymous.page()[0]) for _ in range(5)} == {"none"}
    assert {stars(jason.page()[0]) for _ in range(5)} == {"none"}  # all-v1: even jason
    task.apply(ISTIO / "bookinfo-virtual-service-reviews-test-v2.yaml")
    html, _ = jason.page()
    assert stars(html) == "black" and '<p class="user">jason</p>' in html
    assert {stars(jason.page()[0]) for _ in range(5)} == {"black"}
    assert {stars(b.page()[0]) for b in (anonymous, other) for _ in range(5)} == {"none"}


def test_traffic_shifting_half_then_all_to_v3(task: LocalCluster) -> None:
    browser = Browser(task)
    task.apply(ISTIO / "bookinfo-virtual-service-reviews-50-v3.yaml")
    # The weighted pick is random per request, from the sidecar's seeded generator.
    seen = Counter(stars(browser.page()[0]) for _ in range(100))
    assert set(seen) == {"none", "red"}, seen
    assert 0.3 < seen["red"] / 100 < 0.7, seen  # 50 %: the bounds are 4 standard deviations
    task.apply(ISTIO / "bookinfo-virtual-service-reviews-v3.yaml")
    assert {stars(browser.page()[0]) for _ in range(10)} == {"red"}


def test_fault_injection_delay_uncovers_the_productpage_timeout_bug(task: LocalCluster) -> None:
    anonymous, jason = Browser(task), Browser(task)
    jason.login("jason")
    task.apply([ISTIO / "bookinfo-virtual-service-reviews-test-v2.yaml",
                ISTIO / "bookinfo-virtual-service-ratings-test-delay.yaml"])

    def reviews_v2_directly() -> tuple[dict[str, Any], float]:
        """What reviews v2 answers jason when nobody gives up on it (its own timeout is 10 s)."""
        start = time.monotonic()
        response = httpx.get(anonymous.sidecar.outbound_url + "/reviews/0", timeout=30,
                             headers={"host": "reviews:9080", "end-user": "jason"})
        return response.json(), time.monotonic() - start

    before = len(control_plane(task).sidecar("productpage-v1").telemetry.access_records())
    with ThreadPoolExecutor(2) as pool:
        direct = pool.submit(reviews_v2_directly)
        html, took = jason.page()
        doc, direct_took = direct.result()
    assert stars(html) == "reviews unavailable"
    assert took >= productpage.REVIEWS_TRIES * productpage.CALL_TIMEOUT  # 3 s + 1 retry
    tries = [r for r in control_plane(task).sidecar("productpage-v1").telemetry.access_records()[before:]
             if r.path == "/reviews/0"]
    # productpage hung up on each try: Envoy logs status 0, flag DC (downstream disconnect).
    assert [(r.status, r.flags) for r in tries] == [
        (0, flags.DOWNSTREAM_CONNECTION_TERMINATION)] * productpage.REVIEWS_TRIES
    # reviews v2 itself waited out the 7 s delay and answered with stars.
    assert direct_took >= 7.0 and [r["rating"]["color"] for r in doc["reviews"]] == ["black"] * 2
    # Anyone else: reviews v1, which does not call ratings: no delay, no error.
    html, _ = anonymous.page()
    assert stars(html) == "none"


def test_fault_injection_abort_shows_ratings_unavailable_for_jason(task: LocalCluster) -> None:
    anonymous, jason = Browser(task), Browser(task)
    jason.login("jason")
    task.apply([ISTIO / "bookinfo-virtual-service-reviews-test-v2.yaml",
                ISTIO / "bookinfo-virtual-service-ratings-test-abort.yaml"])
    html, _ = jason.page()
    assert stars(html) == "ratings unavailable"
    assert html.count(reviews.UNAVAILABLE) == 2 and "Book Reviews" in html
    aborted = [r for r in control_plane(task).sidecar("reviews-v2").telemetry.access_records()
               if r.path == "/ratings/0" and r.status == 500]
    assert aborted and all(flags.FAULT_INJECTED in r.flags for r in aborted)
    assert stars(anonymous.page()[0]) == "none"


def test_request_timeouts_half_a_second_twice_then_reviews_unavailable(task: LocalCluster) -> None:
    browser = Browser(task)
    task.apply(ISTIO / "bookinfo-timeouts-1-delay-ratings.yaml")
    html, took = browser.page()
    assert stars(html) == "black" and took >= 2.0  # the ratings delay, every request
    task.apply(ISTIO / "bookinfo-timeouts-2-reviews-timeout.yaml")
    before = len(control_plane(task).sidecar("productpage-v1").telemetry.access_records())
    html, took = browser.page()
    assert stars(html) == "reviews unavailable" and took >= 1.0
    timed_out = [r for r in control_plane(task).sidecar("productpage-v1").telemetry.access_records()[before:]
                 if r.path == "/reviews/0"]
    assert [(r.status, r.flags) for r in timed_out] == [(504, flags.UPSTREAM_REQUEST_TIMEOUT)] * 2
