"""Knative's request limits: defaults, validation, the shared decision, and live cuts."""

from __future__ import annotations

import sys
import textwrap
import urllib.error
import urllib.request

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.manifests import ManifestError, load_text
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.expand import expand
from labkit.serving.models import KnativeService
from labkit.serving.queue_proxy import RequestWatch
from labkit.serving.service import configure_serving, knative_service
from labkit.serving.timeouts import (
    IDLE,
    RESPONSE_START,
    TIMEOUT,
    ConfigDefaults,
    Deadline,
    RequestTimeouts,
    cut,
    next_deadline,
    revision_timeouts,
)

# --- defaults (RevisionSpec.SetDefaults with config-defaults) ---------------------------------


def test_unset_limits_take_knatives_defaults() -> None:
    # revision-response-start-timeout-seconds defaults to the timeout (300), which is not
    # below timeoutSeconds 300, so it stays off; idle defaults to 0 (infinite).
    assert revision_timeouts(None, None, None) == RequestTimeouts(300, 0, 0)
    assert revision_timeouts(0, None, None) == RequestTimeouts(300, 0, 0)


def test_a_longer_timeout_gets_the_default_response_start_limit() -> None:
    assert revision_timeouts(600, None, None) == RequestTimeouts(600, 300, 0)
    assert revision_timeouts(600, 0, None) == RequestTimeouts(600, 0, 0)  # explicit 0: off


def test_cluster_defaults_apply_only_below_the_revision_timeout() -> None:
    config = ConfigDefaults(revision_timeout_seconds=120, revision_idle_timeout_seconds=60)
    assert revision_timeouts(None, None, None, config) == RequestTimeouts(120, 0, 60)
    assert revision_timeouts(30, None, None, config) == RequestTimeouts(30, 0, 0)


@pytest.mark.parametrize(("settings", "message"), [
    ({"revision_timeout_seconds": 900},
     "revision-timeout-seconds (900) cannot be greater than max-revision-timeout-seconds (600)"),
    ({"revision_response_start_timeout_seconds": 400},
     "revision-response-start-timeout-seconds (400) cannot be greater than "
     "revision-timeout-seconds (300)"),
    ({"revision_idle_timeout_seconds": 301},
     "revision-idle-timeout-seconds (301) cannot be greater than revision-timeout-seconds (300)"),
])
def test_config_defaults_are_checked_as_knative_checks_them(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ConfigDefaults(**settings)
    assert str(info.value) == message


# --- validation of a Service -------------------------------------------------------------------


def _service(spec: str) -> str:
    return textwrap.dedent("""\
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: slow
        spec:
          template:
            spec:
        {spec}
              containers:
                - image: labkit/httpbin
        """).format(spec=textwrap.indent(textwrap.dedent(spec), " " * 6))


def _errors(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_text(text)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(("spec", "line", "field", "message"), [
    ("timeoutSeconds: 700\n", 8, "timeoutSeconds", "expected 0 <= 700 <= 600"),
    ("timeoutSeconds: -1\n", 8, "timeoutSeconds", "expected 0 <= -1 <= 600"),
    ("timeoutSeconds: 10\nresponseStartTimeoutSeconds: 20\n", 9, "responseStartTimeoutSeconds",
     "responseStartTimeoutSeconds (20) cannot be greater than timeoutSeconds (10)"),
    ("idleTimeoutSeconds: 301\n", 8, "idleTimeoutSeconds",
     "idleTimeoutSeconds (301) cannot be greater than timeoutSeconds (300)"),
    ("idleTimeoutSeconds: -5\n", 8, "idleTimeoutSeconds", "expected 0 <= -5 <= 300"),
])
def test_out_of_range_limits_are_refused_with_file_line_and_field(
        spec: str, line: int, field: str, message: str) -> None:
    assert _errors(_service(spec)) == [
        f"<string>:{line}: Service/slow: spec.template.spec.{field}: {message}"]


def test_limits_reach_the_revision_and_the_queue_proxy_env() -> None:
    [svc] = load_text(_service("timeoutSeconds: 600\nidleTimeoutSeconds: 30\n"))
    assert isinstance(svc, KnativeService)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in expand(svc)}
    revision = objects[("Revision", "slow-00001")]["spec"]
    assert (revision["timeoutSeconds"], revision["responseStartTimeoutSeconds"],
            revision["idleTimeoutSeconds"]) == (600, 300, 30)
    deployment = objects[("Deployment", "slow-00001-deployment")]
    [queue] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
               if c["name"] == "queue-proxy"]
    env = {e["name"]: e.get("value") for e in queue["env"]}
    assert (env["REVISION_TIMEOUT_SECONDS"], env["REVISION_RESPONSE_START_TIMEOUT_SECONDS"],
            env["REVISION_IDLE_TIMEOUT_SECONDS"]) == ("600", "300", "30")


# --- the decision ----------------------------------------------------------------------------


def test_before_the_first_byte_the_earliest_limit_fires() -> None:
    limits = RequestTimeouts(timeout=10, response_start=4, idle=6)
    assert next_deadline(limits, 100.0, None) == Deadline(104.0, RESPONSE_START)
    assert next_deadline(RequestTimeouts(10, 0, 6), 100.0, None) == Deadline(106.0, IDLE)
    assert next_deadline(RequestTimeouts(10), 100.0, None) == Deadline(110.0, TIMEOUT)


def test_after_the_first_byte_only_the_idle_limit_counts() -> None:
    assert next_deadline(RequestTimeouts(10, 4, 6), 100.0, 101.0) == Deadline(107.0, IDLE)
    assert next_deadline(RequestTimeouts(10, 4), 100.0, 101.0) is None


def test_equal_deadlines_go_to_the_narrower_limit() -> None:
    assert next_deadline(RequestTimeouts(5, 5, 5), 0.0, None) == Deadline(5.0, RESPONSE_START)
    assert next_deadline(RequestTimeouts(5, 0, 5), 0.0, None) == Deadline(5.0, IDLE)


@pytest.mark.parametrize(("limits", "writes", "end", "expected"), [
    (RequestTimeouts(2), [3.0], 3.0, Deadline(2.0, TIMEOUT)),            # slow answer
    (RequestTimeouts(2), [2.0], 2.0, None),                              # just in time
    (RequestTimeouts(2), [1.0, 2.5, 4.0], 4.0, None),                    # a stream outlives it
    (RequestTimeouts(10, 1), [1.5], 1.5, Deadline(1.0, RESPONSE_START)),
    (RequestTimeouts(10, 0, 2), [1.0, 5.0], 5.0, Deadline(3.0, IDLE)),   # a gap in the stream
    (RequestTimeouts(10, 0, 2), [1.0, 2.5, 4.0], 4.0, None),
    (RequestTimeouts(10, 0, 2), [1.0], 4.0, Deadline(3.0, IDLE)),        # silent after a byte
])
def test_cut_replays_a_request(limits: RequestTimeouts, writes: list[float], end: float,
                               expected: Deadline | None) -> None:
    assert cut(limits, 0.0, writes, end) == expected


def test_a_started_answer_cut_by_the_idle_limit_ends_with_the_message() -> None:
    watch = RequestWatch(RequestTimeouts(10, 0, 1), 0.0, lambda: 0.5)
    watch.received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n", head=True)
    watch.received(b"3\r\nabc\r\n5\r\nde", head=False)  # the second chunk cut short
    answer = watch.answer(Deadline(1.5, IDLE), "request timeout")
    assert (answer.status, answer.body) == (200, b"abcderequest timeout")
    assert answer.header("X-App") == "1" and answer.header("x-labkit-timeout") == "idleTimeoutSeconds=1"


def test_an_unstarted_answer_is_a_504_with_knatives_body() -> None:
    watch = RequestWatch(RequestTimeouts(2), 0.0, lambda: 0.0)
    answer = watch.answer(Deadline(2.0, TIMEOUT), "request timeout")
    assert (answer.status, answer.body) == (504, b"request timeout")
    assert answer.header("x-labkit-timeout") == "timeoutSeconds=2"


# --- live ----------------------------------------------------------------------------------


def _manifest(spec: dict, command: list[str] | None = None,
              annotations: dict[str, str] | None = None) -> str:
    container: dict = {"image": "labkit/httpbin"}
    if command:
        container["command"] = command
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "slow"},
        "spec": {"template": {"metadata": {"annotations": annotations or {}},
                              "spec": {**spec, "containers": [container]}}}})


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.mark.parametrize(("spec", "path", "status", "body", "fired"), [
    # A request that answers after 3 s, cut at 1 s before anything was answered.
    ({"timeoutSeconds": 1}, "/delay/3", 504, b"request timeout", "timeoutSeconds=1"),
    ({"timeoutSeconds": 10, "responseStartTimeoutSeconds": 1}, "/delay/3", 504,
     b"request timeout", "responseStartTimeoutSeconds=1"),
    # Two bytes 2 s apart: the gap exceeds the idle limit, so the started answer ends with
    # the message.
    ({"timeoutSeconds": 10, "idleTimeoutSeconds": 1}, "/drip?duration=4&numbytes=2", 200,
     b"*request timeout", "idleTimeoutSeconds=1"),
    # Four bytes over 2 s: timeoutSeconds only bounds the wait for the first byte.
    ({"timeoutSeconds": 1}, "/drip?duration=2&numbytes=4", 200, b"****", None),
])
def test_each_limit_cuts_a_request_as_knatives_queue_proxy_does(
        cluster: LocalCluster, wait_for, spec: dict, path: str, status: int, body: bytes,
        fired: str | None) -> None:
    # target-burst-capacity 0 takes the activator out of the path once the pod is ready.
    cluster.apply(_manifest(spec, annotations={
        "autoscaling.knative.dev/target-burst-capacity": "0"}))
    svc = knative_service(cluster, "slow")
    revision = svc.revision()
    wait_for(lambda: revision.mode == "Serve", 10, "the activator to leave the path")
    got_status, got_body, headers = _get(svc.url + path)
    assert (got_status, got_body) == (status, body)
    assert headers.get("x-labkit-timeout") == fired


def test_the_activator_holds_a_request_at_most_the_revision_timeout(cluster: LocalCluster) -> None:
    # A replica that takes 3 s to start; the request waits in the activator and is cut there.
    configure_serving(cluster, autoscaler=AutoscalerConfig(allow_zero_initial_scale=True))
    slow = [sys.executable, "-c", "import runpy, time; time.sleep(3); "
            "runpy.run_module('labkit.apps.httpbin', run_name='__main__')"]
    cluster.apply(_manifest({"timeoutSeconds": 1}, command=slow,
                            annotations={"autoscaling.knative.dev/initial-scale": "0"}))
    svc = knative_service(cluster, "slow")
    status, body, headers = _get(svc.url + "/get")
    assert (status, body) == (504, b"activator request timeout")
    assert headers.get("x-labkit-timeout") == "timeoutSeconds=1"
    assert svc.activator is not None and svc.activator.rejected == 1 and svc.activator.forwarded == 0
