"""A real Prometheus server that evaluates Flagger's MetricTemplates, started by labkit.

Flagger's `prometheus` provider (fluxcd/flagger pkg/metrics/providers/prometheus.go) sends a
rendered query to `<address>/api/v1/query` and takes the sample value; no sample, or NaN (a
ratio over no traffic), is "no values found". labkit does the same against a Prometheus binary
(Debian's `prometheus` package, or `$LABKIT_PROMETHEUS`) and never evaluates PromQL itself.

`Prometheus` runs the binary as a labkit process (it ends with its owner, `labkit ps` lists it)
on a free port of 127.0.0.1, with a generated configuration and a data directory of its own,
both removed on `stop()`. It scrapes the targets it is given (sidecars' /stats/prometheus, the
model monitor's /metrics...) through a `file_sd_configs` file, so `set_targets` changes them
without a restart, as Kubernetes service discovery would. `honor_labels: true` keeps the
targets' own labels (the monitor's `namespace`, say) as Istio's Prometheus does for pods.

A MetricTemplate names its provider's address as a cluster sees it
(`http://prometheus.istio-system:9090`, Istio's addon); a running `Prometheus` answers for the
addresses in its `serves` list, so the same YAML works here and on a cluster. `query` is the
Canary controller's seam (`CanaryController.query`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from labkit import runs
from labkit.files import write_atomic
from labkit.flagger.templates import prometheus_query
from labkit.net import HOST, ReplicaProcess, free_port

if TYPE_CHECKING:
    from labkit.core.pods import Pod
    from labkit.mesh.proxy import Sidecar

__all__ = ["BINARY_ENV", "ISTIO_ADDON", "Prometheus", "ScrapeTarget", "config_text", "find_binary",
           "pod_targets", "query", "sidecar_targets", "targets_json"]

BINARY_ENV = "LABKIT_PROMETHEUS"
ISTIO_ADDON = "http://prometheus.istio-system:9090"
"""Where Istio's sample Prometheus listens in a cluster; Flagger's docs use this address."""

_serving: dict[str, str] = {}  # address a MetricTemplate names -> URL of a running Prometheus
_serving_lock = threading.Lock()


def find_binary() -> str | None:
    """`$LABKIT_PROMETHEUS`, else `prometheus` on PATH; None when neither is there."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("prometheus")


def missing_reason() -> str:
    """Why there is no Prometheus, for a skipped test or a lab cell."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return f"${BINARY_ENV}={named} is not an executable file"
    return ("no prometheus binary: install Debian's `prometheus` package (`make test` does, as "
            f"root on Debian) or set ${BINARY_ENV} to one")


@dataclass(frozen=True)
class ScrapeTarget:
    """One metrics endpoint: `url` like http://127.0.0.1:PORT/stats/prometheus; `labels` are
    added to every series scraped from it (e.g. the pod's name)."""

    url: str
    labels: Mapping[str, str] = field(default_factory=dict)


def sidecar_targets(sidecars: Iterable[Sidecar]) -> list[ScrapeTarget]:
    """The sidecars' Envoy-style stats endpoints (Istio's Prometheus scrapes each proxy)."""
    return [ScrapeTarget(s.metrics_url, {"pod_workload": s.workload.name,
                                         "pod_namespace": s.workload.namespace}) for s in sidecars]


def pod_targets(pods: Iterable[Pod], path: str = "/metrics") -> list[ScrapeTarget]:
    """Pods' own metrics endpoints (`prometheus.io/path` on a cluster), e.g. the model monitor's."""
    return [ScrapeTarget(f"{p.replica.url}{path}", {"pod": p.name, "pod_namespace": p.namespace})
            for p in pods]


def _duration(seconds: float) -> str:
    """Prometheus' duration syntax, in whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def config_text(targets_file: Path, scrape_interval: float) -> str:
    """The server's configuration: one job whose targets come from `targets_file` (JSON is YAML,
    so json.dumps writes it)."""
    interval = _duration(scrape_interval)
    return json.dumps({
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": "labkit",
            "honor_labels": True,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    }, indent=2) + "\n"


def targets_json(targets: Iterable[ScrapeTarget]) -> str:
    """A file_sd target file: one group per endpoint, its path in `__metrics_path__`."""
    groups = []
    for target in targets:
        parts = urlsplit(target.url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"scrape target {target.url!r}: need http://host:port/path")
        groups.append({"targets": [f"{parts.hostname}:{parts.port}"],
                       "labels": {**target.labels, "__metrics_path__": parts.path or "/metrics"}})
    return json.dumps(groups, indent=1) + "\n"


def query(address: str, promql: str) -> float | None:
    """Flagger's provider call: the query's value, None for no sample or NaN. `address` is the
    MetricTemplate's; a running labkit Prometheus that serves it answers instead."""
    with _serving_lock:
        url = _serving.get(address.rstrip("/"), address)
    try:
        value = prometheus_query(url, promql)
    except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
        raise RuntimeError(f"error response: {exc.read().decode(errors='replace')}") from exc
    return None if value is None or math.isnan(value) else value


def _timestamp(text: str) -> float:
    """RFC 3339 with nanoseconds (Go's format) -> epoch seconds."""
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Prometheus:
    """A Prometheus server run by labkit; see the module docstring.

    >>> with Prometheus(sidecar_targets(plane.sidecars())) as prom:   # doctest: +SKIP
    ...     prom.wait_for_scrape()
    ...     prom.query("sum(istio_requests_total)")
    """

    def __init__(self, targets: Iterable[ScrapeTarget] = (), *, scrape_interval: float = 1.0,
                 serves: Sequence[str] = (ISTIO_ADDON,), binary: str | None = None) -> None:
        if scrape_interval <= 0:
            raise ValueError(f"scrape_interval: must be > 0 seconds, got {scrape_interval}")
        self.binary = binary or find_binary()
        self.scrape_interval = scrape_interval
        self.serves = tuple(a.rstrip("/") for a in serves)
        self.targets: tuple[ScrapeTarget, ...] = tuple(targets)
        self._dir: Path | None = None
        self._process: ReplicaProcess | None = None

    @property
    def url(self) -> str:
        if self._process is None:
            raise RuntimeError("Prometheus is not started")
        return self._process.url

    def start(self, timeout: float = 60.0) -> Prometheus:
        """Write the configuration, run the server, wait until /-/ready says so."""
        if self.binary is None:
            raise FileNotFoundError(missing_reason())
        if self._process is not None:
            raise RuntimeError("Prometheus was already started; make a new one")
        self._dir = Path(tempfile.mkdtemp(prefix="labkit-prometheus-"))
        self.set_targets(self.targets)
        config = self._dir / "prometheus.yml"
        config.write_text(config_text(self._dir / "targets.json", self.scrape_interval))
        port = free_port()
        self._process = ReplicaProcess(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self._dir / 'data'}",
             f"--web.listen-address={HOST}:{port}", "--log.level=warn",
             "--storage.tsdb.retention.time=1d"],
            name="prometheus", port=port, ready_path="/-/ready",
            workload=runs.Workload(kind="Prometheus", name="prometheus"))
        try:
            self._process.start(timeout=timeout)
        except BaseException:
            self._remove_dir()
            raise
        with _serving_lock:
            _serving.update(dict.fromkeys(self.serves, self.url))
        return self

    def set_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Scrape these endpoints from now on (written atomically; Prometheus watches the file,
        and its discovery manager passes changes on every 5 s: expect about that much delay,
        and `wait_for_scrape` for it)."""
        self.targets = tuple(targets)
        if self._dir is None:
            return
        write_atomic(self._dir / "targets.json", targets_json(self.targets))

    def api(self, path: str) -> Any:
        """GET one of the server's API paths; its `data`."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body.get('error', body)}")
        return body["data"]

    def wait_for_scrape(self, after: float | None = None, timeout: float = 30.0) -> None:
        """Block until every target was scraped, successfully, after `after` (epoch seconds;
        default now): from then on a query sees what the targets had at `after`.

        The targets API reports a scrape before its samples are committed (Prometheus'
        scrape loop reports, then appends `up` and commits), so a scrape counts once a query
        also sees its `up` sample."""
        after = time.time() if after is None else after
        wanted = {t.url for t in self.targets}
        deadline = time.monotonic() + timeout
        while True:
            active = self.api("/api/v1/targets?state=active")["activeTargets"]
            seen = {t["scrapeUrl"]: t for t in active}
            committed: dict[str, float] = {}  # instance (host:port) -> its oldest `up` sample
            for sample in self.api("/api/v1/query?query=timestamp%28up%29")["result"]:
                instance = sample["metric"].get("instance", "")
                committed[instance] = min(committed.get(instance, math.inf), float(sample["value"][1]))
            pending = [url for url in sorted(wanted)
                       if url not in seen or seen[url]["health"] != "up"
                       or _timestamp(seen[url]["lastScrape"]) <= after
                       or committed.get(urlsplit(url).netloc, -math.inf) <= after]
            if not pending:
                return
            if time.monotonic() > deadline:
                details = "; ".join(f"{u}: " + (f"{seen[u]['health']} {seen[u]['lastError']}".strip()
                                                 if u in seen else "not discovered yet")
                                    for u in pending)
                raise TimeoutError(f"prometheus did not scrape within {timeout:g} s: {details}")
            time.sleep(self.scrape_interval / 4)

    def query(self, promql: str) -> float | None:
        """Evaluate a PromQL query on this server (as `query` does for a template's address)."""
        return query(self.url, promql)

    def stop(self) -> None:
        """Stop the server, forget its addresses, remove its files. Idempotent."""
        with _serving_lock:
            for address in self.serves:
                if self._process is not None and _serving.get(address) == self._process.url:
                    del _serving[address]
        if self._process is not None:
            self._process.stop()
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Prometheus:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
