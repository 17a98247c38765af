"""The projects' own samples (data/manifests/samples) run unchanged and do what their guides say.

Each live test applies a guide's files in its order and checks the outcome the guide states
(data/manifests/samples/README.md lists them): the hello answer, the 50/50 split and the tags,
autoscale-go's report, the ping and the Trigger filters reaching event-display, the 503s of
circuit breaking, the mirrored copy, the reset under STRICT mTLS, the 403 of a DENY policy, the
iris predictions over V1 and V2, KServe's 90/10 canary and its promotion, Flagger's phases.
Splits are checked with wide binomial bounds over enough requests; waits poll, never sleep.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mesh_helpers import applied, get

from labkit import http1
from labkit.apps import autoscale, podinfo
from labkit.cluster import LocalCluster
from labkit.core.models import Deployment
from labkit.eventing.cron import parse_schedule
from labkit.eventing.models import PingSource
from labkit.manifests import ManifestError, ManifestIssue, load, load_text
from labkit.mesh import flags
from labkit.mesh.control import control_plane
from labkit.serving.service import knative_service

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "manifests" / "samples"
ALL = sorted(SAMPLES.rglob("*.yaml"))
KSVC = "serving.knative.dev/v1/Service"


def sample(path: str) -> Path:
    return SAMPLES / path


def body(url: str, **kw: Any) -> str:
    response = httpx.get(url, timeout=30, **kw)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response.text


# --- every sample loads; the warning channel --------------------------------------------------

@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(SAMPLES)) for p in ALL])
def test_each_sample_loads_and_the_readme_says_where_it_comes_from(path: Path) -> None:
    warnings: list[ManifestIssue] = []
    assert load(path, warnings)
    assert all(w.severity == "warning" and w.line for w in warnings)
    assert str(path.relative_to(SAMPLES)) in (SAMPLES / "README.md").read_text()


def test_ignorable_fields_warn_with_file_line_and_path_and_are_dropped() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  revisionHistoryLimit: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {disk: ssd}
      containers:
      - name: web
        image: labkit/httpbin
        imagePullPolicy: Always
        resources: {limits: {cpu: 500m}}
"""
    warnings: list[ManifestIssue] = []
    [deployment] = load(text, warnings)
    assert isinstance(deployment, Deployment)
    assert [str(w) for w in warnings] == [
        "<string>:5: Deployment/web: spec.revisionHistoryLimit: warning: ignored: labkit keeps "
        "no old ReplicaSets to roll back to",
        "<string>:10: Deployment/web: spec.template.spec.nodeSelector: warning: ignored: labkit "
        "runs every pod on this machine (there is no scheduler)",
        "<string>:14: Deployment/web: spec.template.spec.containers[0].imagePullPolicy: warning: "
        "ignored: labkit pulls no image: the image names a built-in app",
        "<string>:15: Deployment/web: spec.template.spec.containers[0].resources.limits: warning: "
        "ignored: labkit does not limit CPU and memory",
    ]
    assert deployment.spec.template.spec.containers[0].image == "labkit/httpbin"
    load_text(text)  # without a list the warnings are simply not collected


def test_a_field_that_changes_behaviour_stays_an_error_beside_the_warnings() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  strategy: {type: Recreate}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: labkit/httpbin, imagePullPolicy: Always, resources: {}}
"""
    warnings: list[ManifestIssue] = []
    with pytest.raises(ManifestError) as caught:
        load(text, warnings)
    assert [(e.line, e.path) for e in caught.value.errors] == [(5, "spec.strategy")]
    assert "unknown field 'strategy'" in caught.value.errors[0].message
    # `resources` means nothing at the Deployment level: an error there, not a warning.
    with pytest.raises(ManifestError, match=r"spec\.resources: unknown field 'resources'"):
        load(text.replace("strategy: {type: Recreate}", "resources: {}"))
    assert {w.path.rsplit(".", 1)[-1] for w in warnings} == {"imagePullPolicy"}  # resources are kept


def test_labkit_up_prints_each_warning_as_file_line_path(
        write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    from labkit import cli

    path = write("web.yaml", """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: labkit/httpbin, imagePullPolicy: Always, replicas: 2}
""")
    assert cli.main(["up", str(path)]) == cli.EXIT_BAD_INPUT  # the error: nothing starts
    err = capsys.readouterr().err
    assert f"{path}:10: Deployment/web: spec.template.spec.containers[0].imagePullPolicy: " \
           "warning: ignored: labkit pulls no image" in err
    assert f"{path}:10: Deployment/web: spec.template.spec.containers[0].replicas: unknown field" in err


# --- the apps the images map to ---------------------------------------------------------------

def answer(app: Callable[[http1.Request], Any], target: str, method: str = "GET",
           content: bytes = b"") -> tuple[int, str, bytes]:
    return asyncio.run(app(http1.Request(method, target, "1.1", [("Host", "x")], content)))


def test_autoscale_answers_as_the_knative_sample() -> None:
    status, _, text = answer(autoscale.answer, "/?sleep=10&prime=10000&bloat=5")
    lines = text.decode().splitlines()
    assert status == 200 and lines[:2] == ["Allocated 5 Mb of memory.",
                                           "The largest prime less than 10000 is 9973."]
    assert re.fullmatch(r"Slept for \d+\.\d\d milliseconds\.", lines[2])
    assert answer(autoscale.answer, "/?prime=2")[2] == b"There are no primes smaller than 2.\n"
    assert answer(autoscale.answer, "/?sleep=abc")[0] == 400
    assert [autoscale.largest_prime_below(n) for n in (3, 4, 100, 7920)] == [2, 3, 97, 7919]


def test_podinfo_endpoints_the_flagger_tutorial_uses() -> None:
    assert json.loads(answer(podinfo.answer, "/")[2])["version"] == podinfo.VERSION
    assert answer(podinfo.answer, "/status/500")[:1] == (500,)
    assert json.loads(answer(podinfo.answer, "/status/503")[2]) == {"status": 503}
    assert json.loads(answer(podinfo.answer, "/delay/0.01")[2]) == {"delay": 0.01}
    assert json.loads(answer(podinfo.answer, "/healthz")[2]) == {"status": "OK"}
    assert "token" in json.loads(answer(podinfo.answer, "/token", "POST", b"test")[2])
    assert answer(podinfo.answer, "/readyz/disable", "POST")[0] == 202
    assert answer(podinfo.answer, "/readyz")[0] == 503
    answer(podinfo.answer, "/readyz/enable", "POST")
    assert answer(podinfo.answer, "/readyz")[0] == 200
    assert answer(podinfo.answer, "/echo", "POST", b"hi")[2] == b"hi"
    assert any(line.startswith("PATH=") for line in json.loads(answer(podinfo.answer, "/env")[2]))


# --- Knative Serving --------------------------------------------------------------------------

def test_knative_hello_world_traffic_split_and_tags(cluster: LocalCluster) -> None:
    cluster.apply(sample("knative/hello-world.yaml"))
    url = knative_service(cluster, "hello").url
    assert body(url) == "Hello World!\n"
    cluster.apply(sample("knative/traffic-split-1-revision.yaml"))
    assert body(url) == "Hello Knative!\n"
    cluster.apply(sample("knative/traffic-split-2-split.yaml"))
    with ThreadPoolExecutor(8) as pool:
        seen = Counter(pool.map(lambda _: body(url), range(200)))
    assert set(seen) == {"Hello World!\n", "Hello Knative!\n"}
    assert 0.35 < seen["Hello Knative!\n"] / 200 < 0.65  # 50 %: > 4 standard deviations
    cluster.apply(sample("knative/traffic-tags.yaml"))
    svc = knative_service(cluster, "hello")
    assert {body(url) for _ in range(20)} == {"Hello World!\n"}
    assert body(svc.tag_url("latest")) == "Hello Knative!\n"
    assert body(svc.tag_url("current")) == "Hello World!\n"


def test_autoscale_go_reports_what_each_request_spent(cluster: LocalCluster) -> None:
    cluster.apply(sample("knative/autoscale-go.yaml"))
    text = body(knative_service(cluster, "autoscale-go").url + "?sleep=100&prime=10000&bloat=5")
    assert re.fullmatch(r"Allocated 5 Mb of memory\.\nThe largest prime less than 10000 is "
                        r"9973\.\nSlept for 1\d\d\.\d\d milliseconds\.\n", text), text


# --- Knative Eventing -------------------------------------------------------------------------

def events(cluster: LocalCluster, service: str, namespace: str = "default") -> list[dict]:
    return httpx.get(cluster.url("Service", service, namespace) + "/events", timeout=10).json()


def test_ping_source_delivers_to_event_display(cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    objects = load(sample("eventing/pingsource-event-display.yaml"))
    ping = objects[-1]
    assert isinstance(ping, PingSource)
    # The guide's schedule fires once a minute; the test runs the same source every second.
    schedule = parse_schedule(ping.spec.schedule)
    first = schedule.next_after(datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc))
    assert (schedule.next_after(first) - first).total_seconds() == 60
    fast = ping.model_copy(update={"spec": ping.spec.model_copy(update={"schedule": "* * * * * *"})})
    cluster.apply([*objects[:-1], fast])
    wait_for(lambda: events(cluster, "event-display"), timeout=15, what="a ping at event-display")
    record = events(cluster, "event-display")[0]
    assert record["attributes"]["type"] == "dev.knative.sources.ping"
    assert record["attributes"]["source"] == "/apis/v1/namespaces/default/pingsources/test-ping-source"
    assert json.loads(record["data"]) == {"message": "Hello world!"}


def test_broker_triggers_route_by_type_and_source(cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    cluster.apply(sample("eventing/broker-trigger.yaml"))
    broker = cluster.url("Broker", "default", "event-example")
    sent = {"say-hello": ("greeting", "not-sendoff"), "say-goodbye": ("not-greeting", "sendoff"),
            "say-hello-goodbye": ("greeting", "sendoff"), "say-nothing": ("other", "other")}
    for event_id, (type_, source) in sent.items():
        response = httpx.post(broker, timeout=10, content=b'{"msg": "Hello Knative!"}', headers={
            "Ce-Id": event_id, "Ce-Specversion": "1.0", "Ce-Type": type_, "Ce-Source": source,
            "Content-Type": "application/json"})
        assert response.status_code == 202, response.text

    def ids(service: str) -> set[str]:
        return {r["attributes"]["id"] for r in events(cluster, service, "event-example")}

    wait_for(lambda: len(ids("hello-display")) == 2 and len(ids("goodbye-display")) == 2,
             timeout=15, what="both displays to get their events")
    assert ids("hello-display") == {"say-hello", "say-hello-goodbye"}
    assert ids("goodbye-display") == {"say-goodbye", "say-hello-goodbye"}


# --- Istio ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    """injection.yaml and httpbin.yaml, shared by the httpbin tasks (each undoes its config)."""
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply([sample("istio/injection.yaml"), sample("istio/httpbin.yaml")])
        yield cluster


def applied_sample(cluster: LocalCluster, *paths: str) -> Any:
    return applied(cluster, "---\n".join(sample(p).read_text() for p in paths))


def test_httpbin_answers_through_the_mesh(mesh: LocalCluster) -> None:
    response = get(control_plane(mesh).client("default", "curl"), "/get")
    assert response.status_code == 200 and response.json()["url"] == "/get"


def test_circuit_breaking_answers_503_overflow_at_once(mesh: LocalCluster) -> None:
    fortio = control_plane(mesh).client("default", "fortio")
    with applied_sample(mesh, "istio/circuit-breaking.yaml"):
        barrier = threading.Barrier(3)

        def call(_: int) -> httpx.Response:
            barrier.wait()  # three requests at once: one active, one pending, one overflowing
            return get(fortio, "/delay/1")

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(call, range(3)))
    codes = Counter(r.status_code for r in answers)
    assert codes[503] >= 1 and codes[200] >= 1, codes
    overflow = [r for r in answers if r.status_code == 503]
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflow)
    assert all(r.text == flags.reset_body("overflow") for r in overflow), [r.text for r in overflow]


def test_mtls_migration_strict_resets_the_legacy_client(cluster: LocalCluster) -> None:
    cluster.apply(sample("istio/mtls-migration-1-setup.yaml"))
    clients = {ns: control_plane(cluster).client(ns, "sleep") for ns in ("foo", "bar")}

    def legacy(to: str) -> int | None:
        """A plain-text request, as from the legacy namespace's sleep pod (no sidecar)."""
        try:
            return httpx.get(control_plane(cluster).sidecar("httpbin", to).inbound_url + "/ip", timeout=10).status_code
        except httpx.TransportError:
            return None  # curl's 000, exit 56: the connection was reset

    def codes() -> dict[str, int | None]:
        found = {f"{f}->{t}": get(c, "/ip", host=f"httpbin.{t}:8000").status_code
                 for f, c in clients.items() for t in ("foo", "bar")}
        return {**found, **{f"legacy->{t}": legacy(t) for t in ("foo", "bar")}}

    assert set(codes().values()) == {200}
    cluster.apply(sample("istio/mtls-migration-2-strict-foo.yaml"))
    after = codes()
    assert after.pop("legacy->foo") is None and set(after.values()) == {200}, after
    cluster.apply(sample("istio/mtls-migration-3-strict-mesh.yaml"))
    after = codes()
    assert (after.pop("legacy->foo"), after.pop("legacy->bar")) == (None, None)
    assert set(after.values()) == {200}, after


def test_authz_deny_get_then_allow_admins(cluster: LocalCluster) -> None:
    cluster.apply(sample("istio/authz-deny-1-setup.yaml"))
    curl = control_plane(cluster).client("foo", "curl")
    host = "httpbin.foo:8000"
    assert get(curl, "/ip", host=host).status_code == 200
    cluster.apply(sample("istio/authz-deny-2-deny-get.yaml"))
    denied = get(curl, "/get", host=host)
    assert denied.status_code == 403 and denied.text == flags.RBAC_DENIED_BODY
    post = httpx.post(curl.outbound_url + "/post", headers={"host": host}, timeout=30)
    assert post.status_code == 200
    cluster.apply(sample("istio/authz-deny-3-unless-admin.yaml"))
    assert get(curl, "/get", host=host, headers={"x-token": "admin"}).status_code == 200
    assert get(curl, "/get", host=host, headers={"x-token": "guest"}).status_code == 403


def test_mirroring_copies_each_request_to_v2(cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    cluster.apply([sample("istio/injection.yaml"), sample("istio/mirroring-1-httpbin-v1-v2.yaml"),
                   sample("istio/mirroring-2-route-v1.yaml")])
    sleep = control_plane(cluster).client("default", "sleep")
    v1, v2 = control_plane(cluster).sidecar("httpbin-v1"), control_plane(cluster).sidecar("httpbin-v2")

    def served(sidecar: Any) -> int:
        return sum('"GET /headers' in line for line in sidecar.access_log())

    for _ in range(5):
        assert get(sleep, "/headers").status_code == 200
    wait_for(lambda: served(v1) == 5, what="v1's access log")
    assert served(v2) == 0
    cluster.apply(sample("istio/mirroring-3-mirror.yaml"))
    for _ in range(5):
        assert get(sleep, "/headers").status_code == 200
    wait_for(lambda: served(v1) == 10 and served(v2) == 5, what="the mirrored copies at v2")


# --- KServe -----------------------------------------------------------------------------------

def post_json(url: str, payload: object) -> tuple[dict, str | None]:
    response = httpx.post(url, json=payload, timeout=60)
    assert response.status_code == 200, response.text
    return response.json(), response.headers.get("x-labkit-revision")


ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]


def test_sklearn_iris_predicts_over_v1_and_v2(cluster: LocalCluster) -> None:
    cluster.apply([sample("kserve/sklearn-iris.yaml"), sample("kserve/sklearn-iris-v2.yaml")])
    v1 = cluster.url("InferenceService", "sklearn-iris", "kserve-test")
    assert post_json(f"{v1}/v1/models/sklearn-iris:predict", {"instances": ROWS})[0] == {
        "predictions": [1, 1]}
    v2 = cluster.url("InferenceService", "sklearn-v2-iris")
    doc, _ = post_json(f"{v2}/v2/models/sklearn-v2-iris/infer", {"inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]})
    assert doc["model_name"] == "sklearn-v2-iris"
    [output] = doc["outputs"]
    assert (output["shape"], output["datatype"], output["data"]) == ([2], "INT64", [1, 1])


def test_kserve_canary_rollout_splits_90_10_then_promotes(cluster: LocalCluster) -> None:
    cluster.apply(sample("kserve/canary-1-initial.yaml"))
    url = cluster.url("InferenceService", "sklearn-iris", "kserve-test") + "/v1/models/sklearn-iris:predict"

    def traffic() -> dict[str, int]:
        status = cluster.get("InferenceService", "sklearn-iris", "kserve-test").status.detail
        return {t["revisionName"]: t["percent"]
                for t in status["kserve"]["components"]["predictor"]["traffic"]}

    assert traffic() == {"sklearn-iris-predictor-00001": 100}
    cluster.apply(sample("kserve/canary-2-canary.yaml"))
    assert traffic() == {"sklearn-iris-predictor-00001": 90, "sklearn-iris-predictor-00002": 10}
    with ThreadPoolExecutor(4) as pool:
        served = Counter(pool.map(lambda _: post_json(url, {"instances": ROWS})[1], range(200)))
    assert set(served) == {"sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"}
    assert 0.02 < served["sklearn-iris-predictor-00002"] / 200 < 0.22  # 10 %: > 4 sd
    cluster.apply(sample("kserve/canary-3-promote.yaml"))
    assert traffic() == {"sklearn-iris-predictor-00002": 100}
    assert post_json(url, {"instances": ROWS}) == ({"predictions": [1, 1]},
                                                   "sklearn-iris-predictor-00002")


# --- Flagger ----------------------------------------------------------------------------------

def test_flagger_podinfo_canary_advances_to_50_and_promotes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait_for: Callable[..., None]) -> None:
    monkeypatch.setenv("LABKIT_FLAGGER_STATE", str(tmp_path / "flagger"))
    docs = list(yaml.safe_load_all(sample("flagger/podinfo-1-setup.yaml").read_text()))
    [canary] = [d for d in docs if d["kind"] == "Canary"]
    # The tutorial's 1-minute interval, every 1 s: the same steps in a twentieth of the time.
    analysis = canary["spec"]["analysis"]
    analysis["interval"] = "1s"
    for metric in analysis["metrics"]:
        metric["interval"] = "1s"

    def phase() -> str:
        return cluster.get("Canary", "podinfo", "test").status.detail["status"]["phase"]

    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(docs)
        assert phase() == "Initialized"
        assert {("Deployment", "podinfo-primary"), ("Service", "podinfo-canary"),
                ("VirtualService", "podinfo")} <= {(o.kind, o.metadata.name) for o in cluster.objects()}
        cluster.apply(sample("flagger/podinfo-2-new-version.yaml"))
        seen: list[str] = []

        def finished() -> bool:
            if not seen or seen[-1] != phase():
                seen.append(phase())
            return seen[-1] in ("Succeeded", "Failed")

        wait_for(finished, timeout=60, what="the canary to finish")
        detail = cluster.get("Canary", "podinfo", "test").status.detail
        messages = [e["message"] for e in detail["events"]]
        primary = cluster.get("Deployment", "podinfo-primary", "test").object
        assert isinstance(primary, Deployment)
    assert seen[-1] == "Succeeded", (seen, messages)
    assert "Progressing" in seen
    advances = [m for m in messages if m.startswith("Advance podinfo.test canary weight")]
    assert [int(m.rsplit(" ", 1)[1]) for m in advances] == [10, 20, 30, 40, 50]
    assert messages[-1] == "Promotion completed! Scaling down podinfo.test"
    assert primary.spec.template.spec.containers[0].image == "ghcr.io/stefanprodan/podinfo:6.0.1"
