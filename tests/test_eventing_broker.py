"""The broker process: ingress status codes, trigger fan-out, delivery, replies, metrics.

Real processes and real HTTP on loopback: a LocalCluster runs the broker as its own process and
the subscribers are in-process HTTP sinks (labkit.eventing.sink).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import wait_for

from labkit.cluster import LocalCluster
from labkit.eventing.broker_control import broker_handle
from labkit.eventing.metrics import metric_value
from labkit.eventing.sink import InProcessSink, SinkBehaviour


def ce_headers(event_id: str = "1", type_: str = "com.example.a", **extra: str) -> dict[str, str]:
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/test",
               "ce-type": type_, "content-type": "application/json"}
    headers.update({f"ce-{k}": v for k, v in extra.items()})
    return headers


def broker_yaml(name: str = "default", annotations: str = "", delivery: str = "") -> str:
    return f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {name}
{annotations}
spec:
{delivery or "  delivery: {retry: 0}"}
"""


def trigger_yaml(name: str, subscriber: str, filter_: str = "", delivery: str = "") -> str:
    return f"""
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
{filter_}
  subscriber: {{uri: "{subscriber}"}}
{delivery}
"""


@pytest.fixture(scope="module")
def ingress() -> Iterator[tuple[LocalCluster, str, InProcessSink]]:
    """One broker with a 1 KiB body limit and a catch-all trigger, shared by the ingress tests."""
    with InProcessSink() as sink, LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(broker_yaml(annotations="  annotations: {labkit.dev/max-body-bytes: '1024'}")
                      + trigger_yaml("all", sink.url))
        yield cluster, broker_handle(cluster, "default").url, sink


@pytest.mark.parametrize("path", ["", "/", "/default/default", "/default/default/"])
def test_ingress_accepts_on_its_url_and_knative_path(ingress, path):
    _, url, _ = ingress
    answer = httpx.post(url + path, headers=ce_headers(f"p{path}"), content=b'{"a": 1}')
    assert answer.status_code == 202


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_missing_required_attribute_is_400_naming_it(ingress, missing):
    _, url, _ = ingress
    headers = ce_headers()
    del headers[f"ce-{missing}"]
    answer = httpx.post(url, headers=headers, content=b"{}")
    assert answer.status_code == 400
    assert missing in answer.json()["error"]


@pytest.mark.parametrize("empty", ["id", "source", "type"])
def test_empty_required_attribute_is_400(ingress, empty):
    _, url, _ = ingress
    answer = httpx.post(url, headers={**ce_headers(), f"ce-{empty}": ""}, content=b"{}")
    assert answer.status_code == 400
    assert "empty" in answer.json()["error"]


@pytest.mark.parametrize("content_type, body, fragment", [
    ("application/json", b'{"not": "an event"}', "not a CloudEvent"),
    ("application/cloudevents-batch+json", b"[]", "batched"),
    ("application/cloudevents+xml", b"<e/>", "unsupported event format"),
    ("application/cloudevents+json", b"{not json", "malformed JSON"),
    ("text/plain", b"hello", "not a CloudEvent"),
])
def test_non_events_batches_and_unknown_formats_are_400(ingress, content_type, body, fragment):
    _, url, _ = ingress
    answer = httpx.post(url, headers={"content-type": content_type}, content=body)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]


def test_unknown_spec_version_is_400(ingress):
    _, url, _ = ingress
    answer = httpx.post(url, headers={**ce_headers(), "ce-specversion": "19.0"}, content=b"{}")
    assert answer.status_code == 400 and "specversion" in answer.json()["error"]


def test_oversized_body_is_413_and_the_broker_keeps_serving(ingress):
    _, url, _ = ingress
    answer = httpx.post(url, headers=ce_headers("big"), content=b"x" * 2000)
    assert answer.status_code == 413
    assert "1024" in answer.json()["error"]
    assert httpx.post(url, headers=ce_headers("small"), content=b"{}").status_code == 202


@pytest.mark.parametrize("path", ["/other/broker", "/default", "/a/b/c"])
def test_unknown_path_is_404(ingress, path):
    _, url, _ = ingress
    assert httpx.post(url + path, headers=ce_headers(), content=b"{}").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(ingress, method):
    _, url, _ = ingress
    assert httpx.request(method, url + "/default/default").status_code == 405


def test_options_is_200_with_allow(ingress):
    _, url, _ = ingress
    answer = httpx.options(url)
    assert answer.status_code == 200 and "POST" in answer.headers["allow"]


def test_attributes_and_data_pass_through_untouched(ingress):
    _, url, sink = ingress
    body = b'{"a":1,   "b":[1,2]}'
    headers = {**ce_headers("exact"), "ce-myext": "v1", "ce-specversion": "0.3"}
    assert httpx.post(url, headers=headers, content=body).status_code == 202
    wait_for(lambda: any(r["attributes"]["id"] == "exact" for r in sink.received()),
             what="delivery")
    record = next(r for r in sink.received() if r["attributes"]["id"] == "exact")
    attributes = record["attributes"]
    assert record["data"] == body.decode()
    assert attributes["specversion"] == "0.3" and attributes["myext"] == "v1"
    assert "time" not in attributes and "knativebrokerttl" not in attributes
    assert "knativearrivaltime" in attributes
    assert record["prefer"] == "reply"


def test_structured_mode_is_accepted_and_delivered_binary(ingress):
    _, url, sink = ingress
    event = {"specversion": "1.0", "id": "structured", "source": "/s", "type": "t",
             "datacontenttype": "application/json", "data": {"k": "v"}}
    answer = httpx.post(url, headers={"content-type": "application/cloudevents+json"},
                        content=json.dumps(event).encode())
    assert answer.status_code == 202
    wait_for(lambda: any(r["attributes"]["id"] == "structured" for r in sink.received()),
             what="delivery")
    record = next(r for r in sink.received() if r["attributes"]["id"] == "structured")
    assert json.loads(record["data"]) == {"k": "v"}


def test_rejections_are_counted_and_nothing_invalid_is_delivered(ingress):
    cluster, url, sink = ingress
    before = len(sink.received())
    httpx.post(url, headers={"content-type": "application/json"}, content=b"{}")
    samples = broker_handle(cluster, "default").metrics()
    assert metric_value(samples, "broker_events_rejected_total", response_code="400") >= 1
    assert len(sink.received()) == before or all(
        r["attributes"].get("id") for r in sink.received())


# ---------------------------------------------------------------------------------------------
# Triggers and delivery


def _ids(sink: InProcessSink) -> list[str]:
    return [r["attributes"]["id"] for r in sink.received()]


def test_filters_fan_out_one_delivery_per_matching_trigger_without_dedup(cluster):
    with InProcessSink() as a, InProcessSink() as b, InProcessSink() as shared:
        cluster.apply(
            broker_yaml()
            + trigger_yaml("orders", a.url, "  filter: {attributes: {type: order.created}}")
            + trigger_yaml("big", b.url,
                           "  filters:\n  - prefix: {type: order.}\n  - exact: {size: big}")
            + trigger_yaml("copy1", shared.url, "  filter: {attributes: {type: order.created}}")
            + trigger_yaml("copy2", shared.url, "  filter: {attributes: {type: order.created}}"))
        url = broker_handle(cluster, "default").url
        send = [("1", "order.created", {}), ("2", "order.paid", {"size": "big"}),
                ("3", "order.created", {"size": "big"}), ("4", "user.created", {})]
        for event_id, type_, ext in send:
            assert httpx.post(url, headers=ce_headers(event_id, type_, **ext),
                              content=b"{}").status_code == 202
        # the same source+id again: a second event, delivered again (no de-duplication)
        assert httpx.post(url, headers=ce_headers("1", "order.created"),
                          content=b"{}").status_code == 202
        wait_for(lambda: len(shared.received()) == 6, what="6 deliveries to the shared sink")
        wait_for(lambda: sorted(_ids(a)) == ["1", "1", "3"], what="orders trigger")
        wait_for(lambda: sorted(_ids(b)) == ["2", "3"], what="big trigger")
        assert sorted(_ids(shared)) == ["1", "1", "1", "1", "3", "3"]


def test_retries_with_backoff_then_dead_letter_sink_with_error_extensions(cluster):
    flaky = SinkBehaviour(fail_first=100, fail_status=503)
    with InProcessSink(flaky) as subscriber, InProcessSink() as dls:
        cluster.apply(broker_yaml() + trigger_yaml(
            "flaky", subscriber.url, delivery=f"""
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT0.05S
    deadLetterSink: {{uri: "{dls.url}"}}
"""))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers=ce_headers("d1"), content=b'{"n": 1}').status_code == 202
        wait_for(lambda: len(dls.received()) == 1, what="dead-lettered event")
        attempts = subscriber.received(successful_only=False)
        assert [r["attempt"] for r in attempts] == [1, 2, 3]
        record = dls.received()[0]
        attributes = record["attributes"]
        assert attributes["id"] == "d1" and record["data"] == '{"n": 1}'
        assert attributes["knativeerrordest"] == subscriber.url
        assert attributes["knativeerrorcode"] == "503"
        assert json.loads(base64.b64decode(attributes["knativeerrordata"])) == {
            "error": "simulated failure"}
        log = broker_handle(cluster, "default").event_log()
        assert [r["what"] for r in log if r.get("trigger") == "flaky"] == [
            "retry", "retry", "dead_letter_queued", "dead_letter"]
        samples = broker_handle(cluster, "default").metrics()
        assert metric_value(samples, "trigger_events_retried_total", trigger_name="flaky") == 2
        assert metric_value(samples, "trigger_events_dead_lettered_total",
                            trigger_name="flaky") == 1


def test_non_retryable_status_goes_straight_to_the_dead_letter_sink(cluster):
    with InProcessSink(SinkBehaviour(fail_first=100, fail_status=422)) as subscriber, \
            InProcessSink() as dls:
        cluster.apply(broker_yaml(delivery=f"""  delivery:
    retry: 5
    deadLetterSink: {{uri: "{dls.url}"}}""") + trigger_yaml("t", subscriber.url))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers=ce_headers("x"), content=b"{}").status_code == 202
        wait_for(lambda: len(dls.received()) == 1, what="dead-lettered event")
        assert len(subscriber.received(successful_only=False)) == 1
        assert dls.received()[0]["attributes"]["knativeerrorcode"] == "422"


def test_hanging_subscriber_is_cut_by_the_timeout_and_retried(cluster):
    hang = SinkBehaviour(hang_first=1, hang_seconds=30)
    with InProcessSink(hang) as subscriber:
        cluster.apply(broker_yaml() + trigger_yaml("slow", subscriber.url, delivery="""
  delivery: {retry: 3, timeout: PT0.3S}
"""))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers=ce_headers("h"), content=b"{}").status_code == 202
        wait_for(lambda: len(subscriber.received()) == 1, what="a later attempt succeeds")
        assert subscriber.received()[0]["attempt"] >= 2
        log = broker_handle(cluster, "default").event_log()
        retry = next(r for r in log if r["what"] == "retry")
        assert retry["attempt"] == 1 and "timeout" in retry["detail"]


def test_a_reply_re_enters_the_broker_and_chains_two_functions(cluster):
    first = SinkBehaviour(reply_type="com.example.step2", function="echo")
    with InProcessSink(first) as step1, InProcessSink() as step2:
        cluster.apply(
            broker_yaml()
            + trigger_yaml("step1", step1.url, "  filter: {attributes: {type: com.example.a}}")
            + trigger_yaml("step2", step2.url,
                           "  filter: {attributes: {type: com.example.step2}}"))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers=ce_headers("r1"), content=b'"hi"').status_code == 202
        wait_for(lambda: len(step2.received()) == 1, what="the reply reaches step 2")
        reply = step2.received()[0]
        assert reply["attributes"]["type"] == "com.example.step2"
        assert json.loads(reply["data"])["echo"] == '"hi"'
        whats = [r["what"] for r in broker_handle(cluster, "default").event_log()]
        assert "reply" in whats


def test_a_trigger_replying_to_itself_stops_at_the_hop_limit(cluster):
    loop = SinkBehaviour(reply_type="com.example.a", function="echo")
    with InProcessSink(loop) as echo:
        cluster.apply(broker_yaml() + trigger_yaml(
            "loop", echo.url, "  filter: {attributes: {type: com.example.a}}"))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers={**ce_headers("l"), "ce-knativebrokerttl": "5"},
                          content=b"{}").status_code == 202
        def log_of() -> list[dict]:
            return broker_handle(cluster, "default").event_log()

        wait_for(lambda: any("reply refused" in str(r.get("detail")) for r in log_of()),
                 what="the hop limit")
        assert len(echo.received()) == 4  # ttl 5 -> 4 at ingress, then 3, 2, 1, refused at 0


def test_trigger_applied_before_its_subscriber_waits_then_delivers(cluster, write):
    cluster.apply(broker_yaml() + """
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: later}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: v1, kind: Service, name: display}
""")
    assert not cluster.get("Trigger", "later").status.ready
    url = broker_handle(cluster, "default").url
    assert httpx.post(url, headers=ce_headers("w"), content=b"{}").status_code == 202
    cluster.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: display}
spec:
  selector: {matchLabels: {app: display}}
  template:
    metadata: {labels: {app: display}}
    spec:
      containers: [{name: c, image: labkit/event-display}]
---
apiVersion: v1
kind: Service
metadata: {name: display}
spec:
  selector: {app: display}
  ports: [{port: 80}]
""")
    wait_for(lambda: cluster.get("Trigger", "later").status.ready, timeout=10,
             what="trigger resolves")
    service = cluster.url("Service", "display")
    from labkit.eventing.sink import received_from

    wait_for(lambda: [r["attributes"]["id"] for r in received_from(service)] == ["w"],
             timeout=15, what="delivery via the Service")


def test_retry_after_is_honoured_up_to_retry_after_max(cluster):
    throttled = SinkBehaviour(fail_first=1, fail_status=429, retry_after=30)
    with InProcessSink(throttled) as subscriber:
        cluster.apply(broker_yaml() + trigger_yaml("t", subscriber.url, delivery="""
  delivery: {retry: 1, retryAfterMax: PT0.3S}
"""))
        url = broker_handle(cluster, "default").url
        assert httpx.post(url, headers=ce_headers("ra"), content=b"{}").status_code == 202
        wait_for(lambda: len(subscriber.received()) == 1, what="delivered after Retry-After")
        retry = next(r for r in broker_handle(cluster, "default").event_log()
                     if r["what"] == "retry")
        assert "next try in 0.3 s" in retry["detail"]  # min(Retry-After 30 s, cap 0.3 s)


def test_format_json_delivers_in_structured_mode_to_a_deployment_ref(cluster):
    from labkit.eventing.sink import event_display_manifest, received_from

    cluster.apply(event_display_manifest("display").split("---")[0] + "---" + broker_yaml() + """
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: structured}
spec:
  broker: default
  subscriber: {ref: {apiVersion: apps/v1, kind: Deployment, name: display}}
  delivery: {format: json}
""")
    pod = cluster.get("Trigger", "structured").status.detail["subscriberUri"]
    url = broker_handle(cluster, "default").url
    assert httpx.post(url, headers=ce_headers("js"), content=b'{"a": 1}').status_code == 202
    wait_for(lambda: len(received_from(pod)) == 1, what="structured delivery")
    record = received_from(pod)[0]
    assert record["contentType"] == "application/cloudevents+json"
    assert json.loads(record["data"]) == {"a": 1}


def test_changing_the_body_limit_restarts_the_broker_without_losing_events(cluster):
    with InProcessSink() as sink:
        cluster.apply(broker_yaml() + trigger_yaml("t", sink.url))
        broker = broker_handle(cluster, "default")
        assert httpx.post(broker.url, headers=ce_headers("before"),
                          content=b"x" * 3000).status_code == 202
        cluster.apply(broker_yaml(annotations="  annotations: {labkit.dev/max-body-bytes: '2000'}"))
        assert httpx.post(broker.url, headers=ce_headers("big"),
                          content=b"x" * 3000).status_code == 413
        wait_for(lambda: "before" in _ids(sink), what="the event accepted before the change")


def test_subscriber_ref_to_a_knative_service(cluster):
    from labkit.eventing.sink import received_from

    cluster.apply(broker_yaml() + """
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: display}
spec:
  template:
    spec:
      containers:
      - image: labkit/event-display
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-ksvc}
spec:
  broker: default
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: display}}
""")
    url = broker_handle(cluster, "default").url
    assert httpx.post(url, headers=ce_headers("kn"), content=b"{}").status_code == 202
    address = cluster.url("serving.knative.dev/v1/Service", "display")
    assert cluster.get("Trigger", "to-ksvc").status.detail["subscriberUri"] == address
    wait_for(lambda: [r["attributes"]["id"] for r in received_from(address)] == ["kn"],
             timeout=20, what="delivery through the Knative Service")
