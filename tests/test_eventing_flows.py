"""flows.knative.dev/v1 Sequence and Parallel, sources.knative.dev/v1 SinkBinding and
ContainerSource: wired as Knative wires them, validated as its webhooks validate them, and run
live with real CloudEvents built by the official SDK (cloudevents.core).

Waits poll a condition with a deadline (event-display's GET /events), never sleep.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from crds.validator import check, check_all

from labkit.apps.appender import Appender
from labkit.apps.expressions import ExpressionFunction
from labkit.cluster import ApplyError, LocalCluster
from labkit.core.models import Deployment
from labkit.eventing.bindings import bind, ce_overrides_value, unbind
from labkit.eventing.channel import channel_handle
from labkit.eventing.events import Event
from labkit.eventing.flow_models import Parallel, Sequence
from labkit.eventing.flows import parallel_plan, sequence_plan
from labkit.eventing.models import CloudEventOverrides
from labkit.eventing.sink import event_display_manifest, received_from, wait_received
from labkit.manifests import ManifestError, load, load_file, load_text

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "manifests" / "samples" / "eventing"
KSVC = "serving.knative.dev/v1/Service"


def post_event(url: str, attributes: dict[str, Any], data: Any) -> int:
    """POST a CloudEvent the official SDK built, in binary mode; the HTTP status."""
    message = to_binary_event(CloudEvent(attributes, data))
    return httpx.post(url, headers=message.headers, content=message.body, timeout=10).status_code


def sample(name: str, *, drop: tuple[str, ...] = ()) -> list[Any]:
    return [o for o in load(SAMPLES / name) if o.kind not in drop]


def data_of(record: dict[str, Any]) -> Any:
    return json.loads(record["data"])


# --- how Knative wires the flows (pure) -------------------------------------------------------

SEQUENCE = """\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: seq}
spec:
  steps:
  - uri: http://step-a/
  - uri: http://step-b/
    delivery: {retry: 3}
  reply: {uri: http://end/}
"""


def test_sequence_plan_names_and_wires_channels_as_knative() -> None:
    [sequence] = load_text(SEQUENCE)
    assert isinstance(sequence, Sequence)
    plan = sequence_plan(sequence)
    assert plan.channels == ("seq-kn-sequence-0", "seq-kn-sequence-1")
    assert plan.entry == "seq-kn-sequence-0"
    first, second = plan.subscriptions
    assert first.subscriber is not None and second.subscriber is not None
    assert (first.name, first.channel, first.subscriber.uri) == (
        "seq-kn-sequence-0", "seq-kn-sequence-0", "http://step-a/")
    assert first.reply is None and first.reply_channel == "seq-kn-sequence-1"
    assert second.reply is not None and second.reply.uri == "http://end/"
    assert second.delivery is not None and second.delivery.retry == 3
    # channelTemplate left out: Knative's defaulting fills in the default channel.
    assert (sequence.channel_template.api_version, sequence.channel_template.kind) == (
        "messaging.knative.dev/v1", "InMemoryChannel")


def test_parallel_plan_filters_on_the_ingress_channel_and_falls_back_to_the_parallel_reply():
    [parallel] = load_text("""\
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: par}
spec:
  branches:
  - filter: {uri: http://even/}
    subscriber: {uri: http://a/}
  - subscriber: {uri: http://b/}
    reply: {uri: http://own-reply/}
  reply: {uri: http://shared-reply/}
""")
    assert isinstance(parallel, Parallel)
    plan = parallel_plan(parallel)
    assert plan.channels == ("par-kn-parallel", "par-kn-parallel-0", "par-kn-parallel-1")
    by_name = {s.name: s for s in plan.subscriptions}
    assert set(by_name) == {"par-kn-parallel-filter-0", "par-kn-parallel-0",
                            "par-kn-parallel-filter-1", "par-kn-parallel-1"}
    filter0 = by_name["par-kn-parallel-filter-0"]
    assert filter0.subscriber is not None
    assert (filter0.channel, filter0.subscriber.uri, filter0.reply_channel) == (
        "par-kn-parallel", "http://even/", "par-kn-parallel-0")
    # No filter: every event goes straight on to the branch channel.
    assert by_name["par-kn-parallel-filter-1"].subscriber_channel == "par-kn-parallel-1"
    shared, own = by_name["par-kn-parallel-0"].reply, by_name["par-kn-parallel-1"].reply
    assert shared is not None and shared.uri == "http://shared-reply/"
    assert own is not None and own.uri == "http://own-reply/"


# --- SinkBinding's Do and Undo (pure) ---------------------------------------------------------

def test_bind_replaces_stale_variables_and_unbind_removes_them() -> None:
    [deployment] = load_text(event_display_manifest("subject").split("---")[0])
    assert isinstance(deployment, Deployment)
    data = deployment.model_dump(by_alias=True)
    data["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "KEEP", "value": "1"}, {"name": "K_SINK", "value": "http://old/"},
        {"name": "K_CA_CERTS", "value": "pem"}]
    stale = Deployment.model_validate(data)

    overrides = CloudEventOverrides(extensions={"sink": "bound"})
    bound = bind(stale, "http://new/", overrides)
    env = [(v.name, v.value) for v in bound.spec.template.spec.containers[0].env]
    assert env == [("KEEP", "1"), ("K_SINK", "http://new/"),
                   ("K_CE_OVERRIDES", '{"extensions":{"sink":"bound"}}')]
    assert bind(bound, "http://new/", overrides) == bound  # idempotent: Undo, then Do
    assert [(v.name, v.value) for v in unbind(bound).spec.template.spec.containers[0].env] == [
        ("KEEP", "1")]
    assert ce_overrides_value(None) == ""  # set but empty, as Knative's Do does


# --- validation: FILE:LINE: Kind/name: field.path: why ----------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec:\n  steps: []\n",
     ["m.yaml:5: Sequence/s: spec.steps: missing field(s)"]),
    ("apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec:\n  steps:\n"
     "  - uri: http://a/\n  - delivery: {retry: 2}\n  - uri: http://b/\n    delivery:\n"
     "      backoffPolicy: quadratic\n  channelTemplate:\n"
     "    apiVersion: messaging.knative.dev/v1\n    kind: KafkaChannel\n",
     ["m.yaml:7: Sequence/s: spec.steps[1]: a destination needs `ref`",
      "m.yaml:10: Sequence/s: spec.steps[2].delivery.backoffPolicy: unknown backoff policy",
      "m.yaml:13: Sequence/s: spec.channelTemplate.kind: labkit runs channels as "
      "messaging.knative.dev/v1 InMemoryChannel, got messaging.knative.dev/v1 KafkaChannel"]),
    ("apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {name: p}\nspec:\n"
     "  branches:\n  - subscriber: {uri: http://a/}\n  - filter: {uri: http://f/}\n",
     ["m.yaml:7: Parallel/p: spec.branches[1].subscriber: required field is missing"]),
    ("apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {name: p}\nspec:\n"
     "  branches:\n  - filter: {uri: not-a-url}\n    subscriber: {uri: http://a/}\n",
     ["m.yaml:6: Parallel/p: spec.branches[0].filter.uri: 'not-a-url' is not an absolute"]),
    ("apiVersion: sources.knative.dev/v1\nkind: SinkBinding\nmetadata: {name: b}\nspec:\n"
     "  subject:\n    apiVersion: batch/v1\n    kind: Job\n    name: j\n"
     "    selector: {matchLabels: {app: x}}\n  sink: {uri: http://a/}\n",
     ["m.yaml:5: SinkBinding/b: spec.subject: expected exactly one, got both: name, selector",
      "m.yaml:7: SinkBinding/b: spec.subject.kind: labkit binds apps/v1 Deployment, "
      "serving.knative.dev/v1 Service; got batch/v1 Job"]),
    ("apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: c}\nspec:\n"
     "  template:\n    spec:\n      containers:\n      - {name: a, image: labkit/heartbeats}\n"
     "      - {name: b, image: labkit/heartbeats}\n  sink: {uri: http://a/}\n"
     "  ceOverrides: {extensions: {Sink: x}}\n",
     ["m.yaml:7: ContainerSource/c: spec.template.spec.containers: labkit runs one container",
      "m.yaml:11: ContainerSource/c: spec.ceOverrides.extensions.Sink: invalid extension name"]),
], ids=["no-steps", "bad-steps", "branch-without-subscriber", "filter-uri", "subject",
        "container-source"])
def test_errors_name_file_line_and_field_path(write: Callable[[str, str], Path], text: str,
                                              expected: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        load_file(write("m.yaml", text))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize("name", ["sequence-reply-to-event-display.yaml",
                                  "parallel-multiple-branches.yaml", "sinkbinding-heartbeat.yaml"])
def test_the_samples_pass_the_official_crds_where_we_have_them(name: str) -> None:
    """Sequence and Parallel have no official CRD copy in tests/crds (NO_OFFICIAL_SCHEMA_HERE):
    their parts that do (Knative Services, SinkBinding, PingSource) are checked."""
    documents = [o.model_dump(by_alias=True, exclude_none=True) for o in load(SAMPLES / name)]
    assert check_all(documents) == {}
    checked = {d["kind"] for d in documents if check(d) is not None}
    assert checked - {"Sequence", "Parallel"}


CONTAINER_SOURCE = """\
# https://knative.dev/docs/eventing/custom-event-source/containersource/ with the guide's
# example values (its event-display Deployment and Service, then the ContainerSource).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: event-display
spec:
  replicas: 1
  selector:
    matchLabels: &labels
      app: event-display
  template:
    metadata:
      labels: *labels
    spec:
      containers:
        - name: event-display
          image: gcr.io/knative-releases/knative.dev/eventing/cmd/event_display
---
kind: Service
apiVersion: v1
metadata:
  name: event-display
spec:
  selector:
    app: event-display
  ports:
  - protocol: TCP
    port: 80
    targetPort: 8080
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata:
  name: test-heartbeats
spec:
  template:
    spec:
      containers:
        - image: gcr.io/knative-nightly/knative.dev/eventing/cmd/heartbeats
          name: heartbeats
          args:
            - --period=1
          env:
            - name: POD_NAME
              value: "mypod"
            - name: POD_NAMESPACE
              value: "event-test"
  sink:
    ref:
      apiVersion: v1
      kind: Service
      name: event-display
"""
"""The guide's example, kept here: a sample file under data/manifests/samples would be as good
(its ContainerSource is in NO_OFFICIAL_SCHEMA_HERE, checked by labkit's model only)."""


# --- the sample functions (pure) --------------------------------------------------------------

def test_appender_appends_and_the_expression_functions_filter_and_transform() -> None:
    ping = Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "dev.knative.sources.ping",
                  "time": "2026-01-01T00:11:00Z"}, b'{"message": "Hello world!"}')
    reply = Appender(" - Handled by 0", "step.done").transform(ping)
    assert json.loads(reply.data or b"") == {"id": 0, "message": "Hello world! - Handled by 0"}
    assert reply.type == "step.done" and reply.id == "1"
    with pytest.raises(ValueError, match="unmarshalling"):
        Appender().transform(Event(dict(ping.attributes), b"not json"))
    even = ExpressionFunction("filter", "round(parse_time(event['time']) / 60) % 2 == 0")
    assert not even.evaluate(ping)  # minute 11 is odd
    transformer = ExpressionFunction("transformer", "({'message': event['data']['message'] + '!'})")
    assert transformer.evaluate(ping) == {"message": "Hello world!!"}


# --- Sequence, live -----------------------------------------------------------------------------

def test_pingsource_feeds_the_docs_sequence_and_the_last_reply_reaches_event_display(
        cluster: LocalCluster) -> None:
    objects = sample("sequence-reply-to-event-display.yaml")
    ping = next(o for o in objects if o.kind == "PingSource")
    # The guide fires every 2 minutes; the same source fires every second here.
    objects[objects.index(ping)] = ping.model_copy(
        update={"spec": ping.spec.model_copy(update={"schedule": "* * * * * *"})})
    cluster.apply(objects)

    [record] = wait_received(cluster.url(KSVC, "event-display"), 1, timeout=60)[:1]
    assert data_of(record)["message"] == "Hello world! - Handled by 0 - Handled by 1 - Handled by 2"
    assert record["attributes"]["source"] == "/apis/v1/namespaces/default/pingsources/ping-source"
    assert record["attributes"]["type"] == "dev.knative.sources.ping"

    status = cluster.get("Sequence", "sequence").status
    assert status.ready and status.url == channel_handle(cluster, "sequence-kn-sequence-0").url
    assert [c["channel"]["name"] for c in status.detail["channelStatuses"]] == [
        f"sequence-kn-sequence-{i}" for i in range(3)]
    physical = [s["physicalSubscription"] for s in status.detail["subscriptionStatuses"]]
    assert [p["subscriberUri"] for p in physical] == [
        cluster.url(KSVC, name) for name in ("first", "second", "third")]
    assert physical[0]["replyUri"] == channel_handle(cluster, "sequence-kn-sequence-1").url
    assert physical[2]["replyUri"] == cluster.url(KSVC, "event-display")


def _step(name: str, **env: str) -> str:
    return event_display_manifest(name, {"SINK_FUNCTION": "echo", **env})


def test_a_step_retries_with_its_own_delivery_and_without_reply_the_last_reply_is_dropped(
        cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    cluster.apply([_step("flaky", SINK_FAIL_FIRST="1", SINK_REPLY_TYPE="step.flaky"),
                   _step("last", SINK_REPLY_TYPE="step.last"),
                   event_display_manifest("display")])
    cluster.apply("""\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: retrying}
spec:
  steps:
  - ref: {apiVersion: v1, kind: Service, name: flaky}
    delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.01S}
  reply: {ref: {apiVersion: v1, kind: Service, name: display}}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: open-ended}
spec:
  steps:
  - ref: {apiVersion: v1, kind: Service, name: last}
""")
    url = cluster.url("Sequence", "retrying")
    assert post_event(url, {"type": "order", "source": "/test", "id": "o-1"}, {"n": 1}) == 202
    [arrived] = wait_received(cluster.url("Service", "display"), 1)
    assert arrived["attributes"]["type"] == "step.flaky"  # the step's reply, not the input
    attempts = [r["status"] for r in received_from(cluster.url("Service", "flaky"),
                                                  successful_only=False)]
    assert attempts == [503, 200]

    log = channel_handle(cluster, "open-ended-kn-sequence-0").log
    assert post_event(cluster.url("Sequence", "open-ended"),
                      {"type": "order", "source": "/test", "id": "o-2"}, {"n": 2}) == 202
    [handled] = wait_received(cluster.url("Service", "last"), 1)
    assert handled["attributes"]["id"] == "o-2"
    # The last step's reply has nowhere to go: Knative drops it, the channel says so.
    wait_for(lambda: any(r["what"] == "reply" and "no reply" in r.get("detail", "")
                         for r in log.since()), what="the dropped reply in the channel log")
    assert len(received_from(cluster.url("Service", "display"))) == 1


def test_removing_a_step_keeps_the_address_and_drops_its_channel(cluster: LocalCluster) -> None:
    cluster.apply([_step("one", SINK_REPLY_TYPE="from.one"), _step("two", SINK_REPLY_TYPE="from.two"),
                   event_display_manifest("end")])
    two_steps = """\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: shrinking}
spec:
  steps:
  - ref: {apiVersion: v1, kind: Service, name: one}
  - ref: {apiVersion: v1, kind: Service, name: two}
  reply: {ref: {apiVersion: v1, kind: Service, name: end}}
"""
    cluster.apply(two_steps)
    address = cluster.url("Sequence", "shrinking")
    cluster.apply(two_steps.replace("  - ref: {apiVersion: v1, kind: Service, name: two}\n", ""))
    status = cluster.get("Sequence", "shrinking").status
    assert status.url == address  # channel 0 stays: sources pointed at it keep working
    assert [c["channel"]["name"] for c in status.detail["channelStatuses"]] == [
        "shrinking-kn-sequence-0"]
    with pytest.raises(LookupError):
        channel_handle(cluster, "shrinking-kn-sequence-1")
    assert post_event(address, {"type": "t", "source": "/s", "id": "after"}, {}) == 202
    [arrived] = wait_received(cluster.url("Service", "end"), 1)
    assert arrived["attributes"]["type"] == "from.one"


def test_a_missing_step_keeps_the_sequence_not_ready_until_it_appears(
        cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    cluster.apply("""\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: waiting}
spec:
  steps:
  - ref: {apiVersion: v1, kind: Service, name: later}
""")
    status = cluster.get("Sequence", "waiting").status
    assert not status.ready and "waiting-kn-sequence-0" in status.message
    assert "later" in status.message
    cluster.apply(event_display_manifest("later"))
    wait_for(lambda: cluster.get("Sequence", "waiting").status.ready, what="the step resolved")


def test_a_flow_refuses_a_channel_name_a_users_channel_holds(cluster: LocalCluster) -> None:
    cluster.apply("""\
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: taken-kn-sequence-0}
""")
    with pytest.raises(ApplyError, match="taken-kn-sequence-0.*already exists"):
        cluster.apply("""\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: taken}
spec:
  steps:
  - uri: http://127.0.0.1:9/
""")
    assert [s.kind for s in cluster.status()] == ["InMemoryChannel"]  # rolled back


# --- Parallel, live -----------------------------------------------------------------------------

def _minute_event(minute: int) -> dict[str, Any]:
    return {"type": "dev.knative.sources.ping", "source": "/test", "id": f"minute-{minute}",
            "time": datetime(2026, 1, 1, 0, minute, tzinfo=timezone.utc)}


def test_the_docs_parallel_sends_even_minutes_and_odd_minutes_down_their_own_branch(
        cluster: LocalCluster) -> None:
    cluster.apply(sample("parallel-multiple-branches.yaml", drop=("PingSource",)))
    url = cluster.url("Parallel", "odd-even-parallel")
    for minute in (10, 11, 12):
        assert post_event(url, _minute_event(minute), {"message": "Even or odd?"}) == 202
    records = wait_received(cluster.url(KSVC, "event-display"), 3)
    got = sorted((r["attributes"]["id"], data_of(r)["message"]) for r in records)
    assert got == [("minute-10", "we are even!"), ("minute-11", "this is odd!"),
                   ("minute-12", "we are even!")]
    branches = cluster.get("Parallel", "odd-even-parallel").status.detail["branchStatuses"]
    assert [b["filterChannelStatus"]["channel"]["name"] for b in branches] == [
        "odd-even-parallel-kn-parallel-0", "odd-even-parallel-kn-parallel-1"]


def test_a_branch_without_filter_gets_every_event_and_its_own_reply_wins(
        cluster: LocalCluster) -> None:
    cluster.apply([_step("everyone", SINK_REPLY_TYPE="from.everyone"),
                   _step("picky", SINK_REPLY_TYPE="from.picky"),
                   event_display_manifest("own"), event_display_manifest("shared")])
    cluster.apply("""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: type-filter}
spec:
  template:
    spec:
      containers:
      - image: labkit/filter
        env: [{name: FILTER, value: "event['type'] == 'wanted'"}]
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fan}
spec:
  branches:
  - subscriber: {ref: {apiVersion: v1, kind: Service, name: everyone}}
    reply: {ref: {apiVersion: v1, kind: Service, name: own}}
  - filter: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: type-filter}}
    subscriber: {ref: {apiVersion: v1, kind: Service, name: picky}}
  reply: {ref: {apiVersion: v1, kind: Service, name: shared}}
""")
    url = cluster.url("Parallel", "fan")
    assert post_event(url, {"type": "wanted", "source": "/t", "id": "w"}, {}) == 202
    assert post_event(url, {"type": "other", "source": "/t", "id": "o"}, {}) == 202
    own = wait_received(cluster.url("Service", "own"), 2)
    assert sorted(r["attributes"]["type"] for r in own) == ["from.everyone", "from.everyone"]
    [shared] = wait_received(cluster.url("Service", "shared"), 1)
    assert shared["attributes"]["type"] == "from.picky"
    picked = [r["attributes"]["id"] for r in received_from(cluster.url("Service", "picky"))]
    assert picked == ["w"]


# --- SinkBinding and ContainerSource, live ------------------------------------------------------

def _env(cluster: LocalCluster, kind: str, name: str) -> dict[str, str]:
    obj: Any = cluster.get(kind, name).object  # a Deployment or a Knative Service: both have spec.template
    return {v.name: v.value for v in obj.spec.template.spec.containers[0].env}


def test_the_docs_sinkbinding_gives_its_subject_k_sink_and_deleting_it_takes_it_away(
        cluster: LocalCluster) -> None:
    cluster.apply(SAMPLES / "sinkbinding-heartbeat.yaml")
    display = cluster.url(KSVC, "event-display")
    env = _env(cluster, "Deployment", "heartbeat-cron")
    assert env["K_SINK"] == display
    assert env["K_CE_OVERRIDES"] == '{"extensions":{"sink":"bound"}}'
    beats = wait_received(display, 2)
    attributes = beats[0]["attributes"]
    assert attributes["type"] == "dev.knative.eventing.samples.heartbeat"
    assert attributes["source"] == ("https://knative.dev/eventing-contrib/cmd/heartbeats/"
                                    "#default/heartbeat-cron")
    assert (attributes["sink"], attributes["the"], attributes["heart"]) == ("bound", "42", "yes")
    assert [data_of(b)["id"] for b in beats[:2]] == [1, 2]
    status = cluster.get("SinkBinding", "bind-heartbeat").status
    assert status.ready and status.detail["subjects"] == ["Deployment/heartbeat-cron"]

    pods_before = {p.name for p in cluster.pods_of({"app": "heartbeat-cron"})}
    cluster.delete("SinkBinding", "bind-heartbeat")
    assert "K_SINK" not in _env(cluster, "Deployment", "heartbeat-cron")
    assert not pods_before & {p.name for p in cluster.pods_of({"app": "heartbeat-cron"})}


def test_binding_a_knative_service_makes_a_new_revision_with_k_sink(
        cluster: LocalCluster) -> None:
    cluster.apply([event_display_manifest("display"), """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers: [{image: ghcr.io/knative/helloworld-go}]
"""])
    assert "hello-00001" in cluster.get(KSVC, "hello").status.message
    cluster.apply("""\
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: bind-hello}
spec:
  subject: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}
  sink: {ref: {apiVersion: v1, kind: Service, name: display}}
""")
    assert _env(cluster, KSVC, "hello")["K_SINK"] == cluster.url("Service", "display")
    assert "hello-00002" in cluster.get(KSVC, "hello").status.message


def test_the_docs_containersource_runs_heartbeats_into_its_sink(cluster: LocalCluster) -> None:
    cluster.apply(CONTAINER_SOURCE)
    beats = wait_received(cluster.url("Service", "event-display"), 2)
    assert beats[0]["attributes"]["source"] == (
        "https://knative.dev/eventing-contrib/cmd/heartbeats/#event-test/mypod")
    status = cluster.get("ContainerSource", "test-heartbeats").status
    assert status.ready and status.detail["deployment"] == "test-heartbeats-deployment"
    assert status.detail["sinkUri"] == cluster.url("Service", "event-display")


def test_a_containersource_runs_at_once_and_gets_k_sink_when_its_sink_appears(
        cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    objects = load_text(CONTAINER_SOURCE)
    source = next(o for o in objects if o.kind == "ContainerSource")
    cluster.apply(source)
    status = cluster.get("ContainerSource", "test-heartbeats").status
    assert not status.ready and "sink:" in status.message
    [pod] = cluster.pods_of({"sources.knative.dev/containerSource": "test-heartbeats"})
    assert "K_SINK" not in pod.replica.env  # running, every beat failing, as on a cluster
    cluster.apply([o for o in objects if o is not source])
    assert wait_received(cluster.url("Service", "event-display"), 1, timeout=30)
    sink = cluster.url("Service", "event-display")

    def rolled() -> bool:
        pods = cluster.pods_of({"sources.knative.dev/containerSource": "test-heartbeats"})
        return [p.replica.env.get("K_SINK") for p in pods] == [sink] and pods[0].name != pod.name

    wait_for(rolled, what="the source's pod replaced by one with K_SINK")
