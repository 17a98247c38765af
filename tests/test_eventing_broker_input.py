"""Bad input around a running broker: invalid manifests start nothing and lose nothing."""

from __future__ import annotations

import httpx
import pytest
from conftest import wait_for

from labkit.cluster import ManifestError
from labkit.eventing.broker_control import broker_handle
from labkit.eventing.sink import InProcessSink, SinkBehaviour


def test_invalid_trigger_yaml_is_refused_whole_and_the_broker_keeps_its_events(
        cluster, write, child_pids):
    with InProcessSink() as sink:
        cluster.apply(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: good}}
spec:
  broker: default
  subscriber: {{uri: "{sink.url}"}}
""")
        url = broker_handle(cluster, "default").url
        headers = {"ce-specversion": "1.0", "ce-id": "kept", "ce-source": "/s", "ce-type": "t"}
        assert httpx.post(url, headers=headers).status_code == 202
        processes = child_pids()
        bad = write("bad.yaml", f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: second}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: broken}}
spec:
  broker: default
  subscriber: {{uri: "{sink.url}"}}
  delivery:
    retry: -2
    backoffPolicy: fibonacci
    backoffDelay: 200ms
""")
        with pytest.raises(ManifestError) as info:
            cluster.apply(bad)
        message = str(info.value)
        assert f"{bad}:13: Trigger/broken: spec.delivery.retry: must be >= 0, got -2" in message
        assert "second" not in [row.name for row in cluster.status()]
        assert child_pids() == processes  # nothing started for the valid Broker either
        wait_for(lambda: [r["attributes"]["id"] for r in sink.received()] == ["kept"],
                 what="the accepted event")


def test_sink_behaviour_from_env_names_the_bad_variable():
    assert SinkBehaviour.from_env({"SINK_FAIL_FIRST": "2"}).fail_first == 2
    with pytest.raises(ValueError, match="SINK_FAIL_RATE must be a float"):
        SinkBehaviour.from_env({"SINK_FAIL_RATE": "often"})
    with pytest.raises(ValueError, match="SINK_FUNCTION must be"):
        SinkBehaviour.from_env({"SINK_FUNCTION": "resize"})


def test_event_display_image_runs_flaky_from_env(cluster):
    from labkit.eventing.sink import event_display_manifest, received_from

    cluster.apply(event_display_manifest("flaky", {"SINK_FAIL_FIRST": "1",
                                                   "SINK_FAIL_STATUS": "429"}))
    url = cluster.url("Service", "flaky")
    headers = {"ce-specversion": "1.0", "ce-id": "x", "ce-source": "/s", "ce-type": "t"}
    assert httpx.post(url, headers=headers).status_code == 429
    assert httpx.post(url, headers=headers).status_code == 202
    assert [r["attempt"] for r in received_from(url, successful_only=False)] == [1, 2]


def test_summary_function_replies_with_the_file_summary(tmp_path):
    (tmp_path / "a.txt").write_text("one two\nthree\n")
    behaviour = SinkBehaviour(function="summary", data_dir=str(tmp_path),
                              reply_type="dev.labkit.summary.created")
    with InProcessSink(behaviour) as fn:
        headers = {"ce-specversion": "1.0", "ce-id": "f", "ce-source": "/s", "ce-subject": "a.txt",
                   "ce-type": "dev.labkit.sources.file.created"}
        answer = httpx.post(fn.url, headers=headers)
        assert answer.status_code == 200
        assert answer.headers["ce-type"] == "dev.labkit.summary.created"
        assert answer.json() == {"name": "a.txt", "lines": 2, "words": 3, "characters": 14,
                                 "firstLine": "one two"}


def test_thumbnail_function_writes_a_small_png(tmp_path):
    from PIL import Image

    Image.new("RGB", (640, 480), "red").save(tmp_path / "photo.jpg")
    behaviour = SinkBehaviour(function="thumbnail", data_dir=str(tmp_path), reply_type="thumb")
    with InProcessSink(behaviour) as fn:
        headers = {"ce-specversion": "1.0", "ce-id": "i", "ce-source": "/s",
                   "ce-subject": "photo.jpg", "ce-type": "file"}
        result = httpx.post(fn.url, headers=headers).json()
    assert result["size"] == [64, 48] and result["original"] == [640, 480]
    assert (tmp_path / result["thumbnail"]).exists()
