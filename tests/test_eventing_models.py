"""Eventing manifests: precise FILE:LINE errors for bad specs, exports the official CRDs accept."""

from __future__ import annotations

import pytest

from labkit.manifests import ManifestError, export, load_file, load_text

BROKER = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
spec:
  delivery:
{delivery}
"""

TRIGGER = """\
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
spec:
  broker: default
{body}
  subscriber:
    uri: http://example.com/
"""


def _error(write, text: str) -> str:
    path = write("manifest.yaml", text)
    with pytest.raises(ManifestError) as info:
        load_file(path)
    return str(info.value)


@pytest.mark.parametrize("delivery, line, fragment", [
    ("    backoffDelay: 1s", 7, ("spec.delivery.backoffDelay: invalid ISO-8601 duration '1s' "
                               "(did you mean 'PT1S'?)")),
    ("    retry: -1", 7, "spec.delivery.retry: must be >= 0, got -1"),
    ("    backoffPolicy: quadratic", 7, "unknown backoff policy 'quadratic'"),
    ("    timeout: PT0S", 7, "spec.delivery.timeout: must be greater than zero"),
    ("    retry: \"3\"", 7, "spec.delivery.retry: expected an integer, got string '3'"),
    ("    retyr: 3", 7, "unknown field 'retyr'; did you mean 'retry'?"),
    ("    deadLetterSink: {}", 7, "deadLetterSink: a destination needs `ref`"),
])
def test_broker_delivery_errors_name_file_line_and_field(write, delivery, line, fragment):
    message = _error(write, BROKER.format(delivery=delivery))
    assert f"manifest.yaml:{line}: Broker/default: " in message
    assert fragment in message


@pytest.mark.parametrize("body, line, fragment", [
    ("  filters:\n  - exact: {type: a}\n    suffix: {type: b}", 8,
     "spec.filters[0]: multiple dialects found"),
    ("  filters:\n  - prefix: {type: ''}", 8, "spec.filters[0].prefix.type: must not be empty"),
    ("  filters:\n  - cesql: \"type = 'a'\"", 8, "CloudEvents SQL filters are not supported"),
    ("  filter:\n    attributes:\n      Type: a", 9, "invalid attribute name"),
    ("  filter:\n    attributes:\n      size: 42", 9, "expected a string, got integer 42"),
    ("  filters:\n  - any: []", 8, "spec.filters[0].any: must hold at least one filter"),
])
def test_trigger_filter_errors_name_file_line_and_field(write, body, line, fragment):
    message = _error(write, TRIGGER.format(body=body))
    assert f"manifest.yaml:{line}: Trigger/t: " in message, message
    assert fragment in message


def test_trigger_without_subscriber_and_bad_uri():
    with pytest.raises(ManifestError, match="spec.subscriber: required field is missing"):
        load_text("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n"
                  "spec: {broker: b}\n")
    with pytest.raises(ManifestError, match="not an absolute http"):
        load_text(TRIGGER.format(body="").replace("http://example.com/", "example.com"))


@pytest.mark.parametrize("spec, fragment", [
    ("  schedule: '@every 1m'", "spec.schedule: '@every 1m': @every is not supported"),
    ("  timezone: Mars/Olympus", "spec.timezone: unknown time zone 'Mars/Olympus'"),
    ("  data: a\n  dataBase64: YQ==", "spec.dataBase64: set either data or dataBase64"),
    ("  dataBase64: '!!'", "spec.dataBase64: not valid base64"),
    ("  contentType: application/json\n  data: '[1]'", "data must be a JSON object"),
    ("  ceOverrides: {extensions: {Bad_Name: x}}", "invalid extension name 'Bad_Name'"),
])
def test_ping_source_errors(spec, fragment):
    with pytest.raises(ManifestError) as info:
        load_text(f"apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: p}}\n"
                  f"spec:\n{spec}\n  sink: {{uri: 'http://x/'}}\n")
    assert fragment in str(info.value)


def test_subscription_and_channel_errors():
    with pytest.raises(ManifestError, match="spec.channel.kind: must be Channel or InMemoryChannel"):
        load_text("apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: s}\n"
                  "spec:\n  channel: {kind: Broker, name: b}\n  subscriber: {uri: 'http://x/'}\n")
    with pytest.raises(ManifestError, match="labkit runs channels as"):
        load_text("apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: c}\n"
                  "spec:\n  channelTemplate: {apiVersion: messaging.knative.dev/v1, "
                  "kind: KafkaChannel}\n")


def test_broker_body_limit_annotation_is_checked():
    with pytest.raises(ManifestError, match="must be a positive number of bytes"):
        load_text("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n"
                  "  annotations: {labkit.dev/max-body-bytes: lots}\n")


EXPORTABLE = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
spec:
  delivery:
    retry: 3
    backoffPolicy: exponential
    backoffDelay: PT0.2S
    deadLetterSink: {ref: {apiVersion: v1, kind: Service, name: dls}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: big-orders}
spec:
  broker: default
  filters:
  - prefix: {type: com.example.order.}
  - any:
    - exact: {size: big}
    - not: {suffix: {source: /test}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: fn}}
  delivery: {retry: 2, timeout: PT5S}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: legacy}
spec:
  broker: default
  filter: {attributes: {type: com.example.a, myext: ""}}
  subscriber: {uri: "http://example.com/hook"}
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: ch}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: generic}
spec:
  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: s}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: ch}
  subscriber: {uri: "http://example.com/"}
  reply: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
  delivery: {retry: 1}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: beat}
spec:
  schedule: "*/2 * * * *"
  timezone: Europe/Madrid
  contentType: application/json
  data: '{"message": "hi"}'
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"""


def test_exports_pass_the_official_crds_and_round_trip(crd_validate):
    objects = load_text(EXPORTABLE)
    text = export(objects)
    report = crd_validate(text)
    assert report.count("OK") == len(objects)
    assert load_text(text) == objects
