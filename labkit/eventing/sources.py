"""Event sources: PingSource (cron) and DirectorySource ("a file was uploaded").

Both are split in two: a runner that decides *when* and *what* to emit, driven by a
`labkit.clock.Clock` (so tests run a day of schedule in simulated time), and a controller that
runs the runner live on the cluster's loop and POSTs each event to the resolved sink.

PingSource (reference §10.1): type `dev.knative.sources.ping`, source
`/apis/v1/namespaces/<ns>/pingsources/<name>`, a fresh UUID per tick, `time` = the tick, data
exactly the configured bytes (`data` as UTF-8, or `dataBase64` decoded), `contentType` as
datacontenttype, `ceOverrides.extensions` added. Sent like Knative's adapter: 5 retries with
exponential backoff from 50 ms, no dead-letter sink, replies ignored. (Knative also waits a random
0-500 ms after each tick to spread load; labkit sends at the tick, so timelines stay exact.)

DirectorySource: see `labkit.eventing.models.DirectorySource`. A file is reported once, when two
consecutive scans see the same size and modification time (an upload still being written is
not complete); hidden files and `*.part`, `*.tmp`, `*.crdownload` are in-progress names and
are skipped, so an atomic rename into place is reported once. Files already present when the
source starts are not reported (like bucket notifications: only new uploads). The id is derived
from name, size and mtime, so a re-scan of the same file yields the same id.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labkit.clock import Cancellable, Clock, WallClock
from labkit.core.controller import ObjectStatus
from labkit.eventing.cron import parse_schedule, parse_timezone
from labkit.eventing.delivery import Delivered, DeliveryPolicy, DeliverySpec
from labkit.eventing.destinations import UnresolvedDestination, resolve_destination
from labkit.eventing.dispatch import send
from labkit.eventing.events import Event
from labkit.eventing.metrics import EventLog
from labkit.eventing.models import (
    FILE_EVENT_TYPE,
    PING_EVENT_TYPE,
    DirectorySource,
    PingSource,
)
from labkit.eventing.wire import Client

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = [
    "SOURCE_DELIVERY",
    "WATCHER_IMAGE",
    "DirectoryWatcher",
    "PingRunner",
    "SourceController",
    "export_directory_source",
    "file_event",
    "ping_event",
]

SOURCE_DELIVERY = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay=0.05)
"""How Knative's PingSource adapter sends (no dead-letter sink: after that the event is lost)."""
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".crdownload")
WATCHER_IMAGE = "ghcr.io/labkit/directory-watcher:latest"


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def ping_event(source: PingSource, when: datetime, event_id: str | None = None) -> Event:
    """The event a PingSource sends for the tick at `when`."""
    attributes: dict[str, Any] = {"specversion": "1.0", "id": event_id or str(uuid.uuid4()),
                                  "source": source.event_source, "type": PING_EVENT_TYPE,
                                  "time": _rfc3339(when)}
    if source.spec.content_type:
        attributes["datacontenttype"] = source.spec.content_type
    if source.spec.ce_overrides is not None:
        attributes.update(source.spec.ce_overrides.extensions)
    return Event(attributes, source.payload())


class PingRunner:
    """Fires a PingSource's schedule on a Clock; `emit(event)` is called at each tick.

    `start_epoch` is the Unix time the clock's current `now()` stands for (default: now), so a
    SimClock can stand for any date.
    """

    def __init__(self, source: PingSource, emit: Callable[[Event], None], clock: Clock, *,
                 start_epoch: float | None = None) -> None:
        self.source = source
        self.schedule = parse_schedule(source.spec.schedule)
        self.zone = parse_timezone(source.spec.timezone)
        self.emit = emit
        self.clock = clock
        self._origin = (clock.now(), time.time() if start_epoch is None else start_epoch)
        self._timer: Cancellable | None = None
        self.ticks = 0

    def epoch(self) -> float:
        return self._origin[1] + (self.clock.now() - self._origin[0])

    def next_tick(self) -> datetime:
        return self.schedule.next_after(datetime.fromtimestamp(self.epoch(), timezone.utc),
                                        self.zone)

    def start(self) -> None:
        when = self.next_tick()
        delay = max(when.timestamp() - self.epoch(), 0.0)
        self._timer = self.clock.call_later(delay, lambda: self._fire(when))

    def _fire(self, when: datetime) -> None:
        self.ticks += 1
        self.emit(ping_event(self.source, when))
        self.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def file_event(source_uri: str, path: Path, extensions: dict[str, str] | None = None) -> Event:
    """The event for a complete file: subject = file name, data {name, size, sha256}."""
    stat = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    identity = f"{path.name}\x00{stat.st_size}\x00{stat.st_mtime_ns}".encode()
    attributes: dict[str, Any] = {
        "specversion": "1.0", "id": hashlib.sha256(identity).hexdigest()[:32],
        "source": source_uri, "type": FILE_EVENT_TYPE, "subject": path.name,
        "time": _rfc3339(datetime.fromtimestamp(stat.st_mtime, timezone.utc)),
        "datacontenttype": "application/json", **(extensions or {})}
    data = json.dumps({"name": path.name, "size": stat.st_size, "sha256": digest}).encode()
    return Event(attributes, data)


class DirectoryWatcher:
    """Polls a folder; `scan()` returns the events for files that became complete since the
    last scan. Pure bookkeeping over the file system, no timers: a caller decides when to scan."""

    def __init__(self, directory: str | os.PathLike[str], source_uri: str, *,
                 pattern: str = "*", extensions: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.source_uri = source_uri
        self.pattern = pattern
        self.extensions = dict(extensions or {})
        self._seen: dict[str, tuple[int, int]] = {}
        self._reported: set[tuple[str, int, int]] = set()
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, signature in self._listing().items():  # present before start: not uploads
            self._reported.add((name, *signature))

    def _listing(self) -> dict[str, tuple[int, int]]:
        found = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return {}
        for entry in entries:
            name = entry.name
            if (name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)
                    or not fnmatch.fnmatch(name, self.pattern)):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:
                continue  # removed between listing and stat
            found[name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def scan(self) -> list[Event]:
        listing = self._listing()
        events = []
        for name in sorted(listing):
            signature = listing[name]
            stable = self._seen.get(name) == signature
            if stable and (name, *signature) not in self._reported:
                try:
                    events.append(file_event(self.source_uri, self.directory / name,
                                             self.extensions))
                except FileNotFoundError:
                    continue
                self._reported.add((name, *signature))
        self._seen = listing
        return events


# ---------------------------------------------------------------------------------------------
# Live: the controller for both kinds


class SourceController:
    """Runs a PingSource or DirectorySource on the cluster's loop and sends to its sink."""

    def __init__(self, cluster: LocalCluster, obj: PingSource | DirectorySource, *,
                 poll_interval: float = 0.1) -> None:
        self.cluster = cluster
        self.obj = obj
        self.poll_interval = poll_interval
        self.sink_uri: str | None = None
        self.problem: str | None = None
        self.log = EventLog()
        self.sent = 0
        self.failed = 0
        self._stop: Callable[[], None] | None = None
        self._client: Client | None = None
        self._policy = DeliveryPolicy(SOURCE_DELIVERY)

    def apply(self, obj: PingSource | DirectorySource) -> None:
        self.delete()
        self.obj = obj
        self._resolve()
        self.cluster.loop.run(self._start())

    def _resolve(self) -> None:
        try:
            self.sink_uri = resolve_destination(self.cluster, self.obj.spec.sink,
                                                self.obj.metadata.namespace)
            self.problem = None
        except UnresolvedDestination as err:
            self.sink_uri, self.problem = None, f"sink: {err}"

    async def _start(self) -> None:
        self._client = Client()
        clock = WallClock(asyncio.get_running_loop())
        if isinstance(self.obj, PingSource):
            runner = PingRunner(self.obj, self._emit, clock)
            runner.start()
            self._stop = runner.stop
            return
        watcher = DirectoryWatcher(self.obj.spec.directory, self.obj.event_source,
                                   pattern=self.obj.spec.pattern,
                                   extensions=(self.obj.spec.ce_overrides.extensions
                                               if self.obj.spec.ce_overrides else None))
        timer: list[Cancellable] = []

        def poll() -> None:
            for event in watcher.scan():
                self._emit(event)
            timer[:] = [clock.call_later(self.poll_interval, poll)]

        def stop() -> None:
            for pending in timer:
                pending.cancel()

        poll()
        self._stop = stop

    def _emit(self, event: Event) -> None:
        """On the loop thread: send in the background (a slow sink must not delay the next
        tick or scan)."""
        asyncio.get_running_loop().create_task(self._send(event))

    async def _send(self, event: Event) -> None:
        if self.sink_uri is None:
            self.failed += 1
            self.log.add("dropped", id=event.id, type=event.type, detail=self.problem)
            return
        assert self._client is not None
        sent = await send(self._client, self.sink_uri, event, self._policy)
        ok = isinstance(sent.decision, Delivered)
        self.sent += ok
        self.failed += not ok
        self.log.add("delivered" if ok else "dropped", id=event.id, type=event.type,
                     attempt=sent.attempts, status=sent.last.outcome.status,
                     detail=event.attributes.get("subject"))

    def reconcile(self) -> None:
        if self.problem:
            self._resolve()

    def delete(self) -> None:
        if self._stop is not None and self.cluster.loop.running:
            stop = self._stop

            async def halt() -> None:
                stop()
                if self._client is not None:
                    self._client.close()

            self.cluster.loop.run(halt())
        self._stop = None

    def status(self) -> ObjectStatus:
        return ObjectStatus(
            kind=self.obj.kind, name=self.obj.metadata.name, namespace=self.obj.metadata.namespace,
            ready=self.problem is None, url=None,
            message=self.problem or f"{self.sent} event(s) sent, {self.failed} failed",
            detail={"sinkUri": self.sink_uri, "sent": self.sent, "failed": self.failed})


# ---------------------------------------------------------------------------------------------
# On a real cluster


def export_directory_source(source: DirectorySource, *, image: str = WATCHER_IMAGE,
                            claim_name: str | None = None) -> str:
    """A DirectorySource as Kubernetes YAML a cluster runs: the ContainerSource pattern.

    A Deployment runs the watcher (`python -m labkit.eventing.sources watch`) on a
    PersistentVolumeClaim mounted at `spec.directory`, and a sources.knative.dev/v1 SinkBinding
    injects K_SINK (the resolved sink) into it. Build `image` from labkit (any Python image with
    labkit installed). In production, the uploads would land in object storage and a storage
    notification source (S3/MinIO/GCS) would emit the equivalent event.
    """
    name, namespace = source.metadata.name, source.metadata.namespace
    labels = {"app": f"{name}-watcher"}
    sink = source.spec.sink.model_dump(by_alias=True, exclude_none=True)
    overrides = source.spec.ce_overrides.extensions if source.spec.ce_overrides else {}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-watcher", "namespace": namespace, "labels": dict(labels)},
        "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)}, "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": [{
                "name": "watcher", "image": image,
                "command": ["python", "-m", "labkit.eventing.sources", "watch"],
                "env": [{"name": "WATCH_DIR", "value": source.spec.directory},
                        {"name": "WATCH_PATTERN", "value": source.spec.pattern},
                        {"name": "EVENT_SOURCE", "value": source.event_source}],
                "volumeMounts": [{"name": "uploads", "mountPath": source.spec.directory}]}],
                "volumes": [{"name": "uploads", "persistentVolumeClaim": {
                    "claimName": claim_name or f"{name}-uploads"}}]}}}}
    binding: dict[str, Any] = {
        "apiVersion": "sources.knative.dev/v1", "kind": "SinkBinding",
        "metadata": {"name": f"{name}-binding", "namespace": namespace},
        "spec": {"subject": {"apiVersion": "apps/v1", "kind": "Deployment",
                             "name": f"{name}-watcher"},
                 "sink": sink}}
    if overrides:
        binding["spec"]["ceOverrides"] = {"extensions": dict(overrides)}
    return "---\n".join(yaml.safe_dump(doc, sort_keys=False) for doc in (deployment, binding))


def _watch_main(argv: list[str] | None = None) -> None:
    """The exported watcher's entry point: scan WATCH_DIR, POST new files to K_SINK."""
    parser = argparse.ArgumentParser(prog="python -m labkit.eventing.sources")
    parser.add_argument("command", choices=["watch"])
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    sink = os.environ.get("K_SINK")
    if not sink:
        raise SystemExit("K_SINK is not set: bind this Deployment with a SinkBinding")
    overrides = json.loads(os.environ.get("K_CE_OVERRIDES", "{}")).get("extensions", {})
    watcher = DirectoryWatcher(os.environ.get("WATCH_DIR", "/uploads"),
                               os.environ.get("EVENT_SOURCE", "/labkit/directory-watcher"),
                               pattern=os.environ.get("WATCH_PATTERN", "*"), extensions=overrides)
    policy = DeliveryPolicy(SOURCE_DELIVERY)

    async def run() -> None:
        client = Client()
        while True:
            for event in watcher.scan():
                sent = await send(client, sink, event, policy)
                print(json.dumps({"id": event.id, "subject": event.attributes.get("subject"),
                                  "delivered": isinstance(sent.decision, Delivered)}), flush=True)
            await asyncio.sleep(args.interval)  # the polling period of a long-running watcher

    asyncio.run(run())


if __name__ == "__main__":
    _watch_main()
