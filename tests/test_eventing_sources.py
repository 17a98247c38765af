"""PingSource (cron, driven by a simulated clock) and DirectorySource (file uploaded)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import simpy
import yaml
from conftest import wait_for

from labkit.clock import SimClock
from labkit.eventing.cron import parse_schedule, parse_timezone
from labkit.eventing.models import DirectorySource, PingSource
from labkit.eventing.sink import InProcessSink
from labkit.eventing.sources import (
    DirectoryWatcher,
    PingRunner,
    export_directory_source,
    ping_event,
)
from labkit.manifests import load_text

UTC = timezone.utc


def _ping(spec: str, name: str = "beat") -> PingSource:
    (source,) = load_text(f"""
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: {name}, namespace: lab}}
spec:
{spec}
  sink: {{uri: "http://127.0.0.1:9/"}}
""")
    assert isinstance(source, PingSource)
    return source


@pytest.mark.parametrize("text, after, expected", [
    ("*/5 * * * *", "2026-01-01T10:02:30", "2026-01-01T10:05:00"),
    ("0 9 * * MON-FRI", "2026-01-02T09:00:00", "2026-01-05T09:00:00"),  # Fri -> Mon
    ("30 2 1 * *", "2026-01-15T00:00:00", "2026-02-01T02:30:00"),
    ("10 * * * * ?", "2026-01-01T10:00:10", "2026-01-01T10:01:10"),  # 6 fields: seconds
    ("@hourly", "2026-01-01T10:59:59", "2026-01-01T11:00:00"),
    ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
    ("0 12 13 * 5", "2026-01-01T00:00:00", "2026-01-02T12:00:00"),  # day OR weekday
    ("0 0 * * 7", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),  # 7 is Sunday
])
def test_cron_next_after(text, after, expected):
    moment = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert parse_schedule(text).next_after(moment) == datetime.fromisoformat(expected).replace(
        tzinfo=UTC)


def test_cron_honours_the_time_zone():
    zone = parse_timezone("America/New_York")
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # 07:00 in New York
    fired = parse_schedule("0 9 * * *").next_after(moment, zone)
    assert fired.astimezone(UTC) == datetime(2026, 1, 1, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize("text, fragment", [
    ("@every 1m", "@every is not supported"),
    ("* * *", "has 3 fields"),
    ("61 * * * *", "outside 0-59"),
    ("*/0 * * * *", "step"),
    ("5-1 * * * *", "backwards"),
    ("* * * FOO *", "not a number or a name"),
    ("? * * * *", "only in the day fields"),
])
def test_cron_errors_name_the_field(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_schedule(text)


def test_ping_event_shape_matches_knative():
    source = _ping("  schedule: '*/2 * * * *'\n  contentType: text/plain\n  data: hello\n"
                   "  ceOverrides: {extensions: {team: blue}}")
    event = ping_event(source, datetime(2026, 1, 1, 10, 0, tzinfo=UTC))
    assert event.type == "dev.knative.sources.ping"
    assert event.source == "/apis/v1/namespaces/lab/pingsources/beat"
    assert event.data == b"hello"  # raw bytes, not a JSON string
    assert event.attributes["datacontenttype"] == "text/plain"
    assert event.attributes["time"] == "2026-01-01T10:00:00.000000Z"
    assert event.attributes["team"] == "blue"
    assert ping_event(source, datetime.now(UTC)).id != event.id  # a fresh id per tick


def test_data_base64_is_decoded_before_sending():
    payload = base64.b64encode(b"\x00\x01binary").decode()
    assert _ping(f"  dataBase64: {payload}").payload() == b"\x00\x01binary"


def test_a_simulated_day_of_schedule_fires_at_every_tick_in_order():
    env = simpy.Environment()
    events: list[Any] = []
    source = _ping("  schedule: '0 */6 * * *'\n  data: '{\"x\": 1}'\n  contentType: application/json")
    runner = PingRunner(source, events.append, SimClock(env),
                        start_epoch=datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    runner.start()
    env.run(until=24 * 3600 + 1)
    assert [e.attributes["time"][11:16] for e in events] == ["06:00", "12:00", "18:00", "00:00"]
    assert len({e.id for e in events}) == 4
    runner.stop()
    env.run(until=3 * 24 * 3600)
    assert len(events) == 4  # stopped: no more ticks


def test_live_ping_source_with_a_seconds_schedule_reaches_its_sink(cluster):
    with InProcessSink() as sink:
        cluster.apply(f"""
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: tick}}
spec:
  schedule: "* * * * * *"
  contentType: application/json
  data: '{{"message": "hi"}}'
  sink: {{uri: "{sink.url}"}}
""")
        wait_for(lambda: len(sink.received()) >= 1, timeout=10, what="a ping")
        record = sink.received()[0]
        assert record["attributes"]["type"] == "dev.knative.sources.ping"
        assert record["attributes"]["source"] == "/apis/v1/namespaces/default/pingsources/tick"
        assert json.loads(record["data"]) == {"message": "hi"}


def test_watcher_reports_a_file_once_when_complete(tmp_path):
    (tmp_path / "old.txt").write_text("there before")
    watcher = DirectoryWatcher(tmp_path, "/uploads", pattern="*.txt")
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "skip.jpg").write_text("not matching")
    (tmp_path / "b.txt.part").write_text("uploading")
    assert watcher.scan() == []  # first sight: maybe still being written
    events = watcher.scan()
    assert [e.attributes["subject"] for e in events] == ["a.txt"]
    data = json.loads(events[0].data or b"")
    assert data == {"name": "a.txt", "size": 5, "sha256":
                    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}
    assert events[0].type == "dev.labkit.sources.file.created"
    assert watcher.scan() == []  # reported once
    (tmp_path / "b.txt.part").rename(tmp_path / "b.txt")  # atomic rename into place
    assert watcher.scan() == []
    assert [e.attributes["subject"] for e in watcher.scan()] == ["b.txt"]


def test_watcher_waits_until_a_growing_file_stops_growing(tmp_path):
    watcher = DirectoryWatcher(tmp_path, "/uploads")
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 10)
    assert watcher.scan() == []
    with path.open("ab") as f:
        f.write(b"y" * 10)
    assert watcher.scan() == []  # grew since the last scan
    (event,) = watcher.scan()
    assert json.loads(event.data or b"")["size"] == 20


def test_live_directory_source_emits_for_a_dropped_file(cluster, tmp_path):
    uploads = tmp_path / "uploads"
    with InProcessSink() as sink:
        cluster.apply(f"""
apiVersion: sources.labkit.dev/v1alpha1
kind: DirectorySource
metadata: {{name: uploads}}
spec:
  directory: "{uploads}"
  pattern: "*.txt"
  sink: {{uri: "{sink.url}"}}
""")
        (uploads / "notes.txt").write_text("one two three")
        wait_for(lambda: len(sink.received()) == 1, what="the file event")
        attributes = sink.received()[0]["attributes"]
        assert attributes["subject"] == "notes.txt"
        assert attributes["source"] == "/apis/v1alpha1/namespaces/default/directorysources/uploads"


def test_directory_source_exports_as_deployment_plus_sinkbinding(crd_validate: Callable[[str], str]) -> None:
    (source,) = load_text("""
apiVersion: sources.labkit.dev/v1alpha1
kind: DirectorySource
metadata: {name: uploads}
spec:
  directory: /data/uploads
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
  ceOverrides: {extensions: {team: blue}}
""")
    assert isinstance(source, DirectorySource)
    deployment, binding = yaml.safe_load_all(export_directory_source(source))
    assert deployment["kind"] == "Deployment"
    assert binding["spec"]["subject"]["name"] == deployment["metadata"]["name"]
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    crd_validate(yaml.safe_dump(binding))
