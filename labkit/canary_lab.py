"""Lab 10's moving parts: digits model versions as Deployments, and users who send them
requests and later send the true labels back.

What a cell in lab 10 would otherwise repeat:

* `holdout()` / `holdout_accuracy(version)`: the held-out digits (data/models/digits-holdout.csv)
  and a model version's accuracy on them, computed here with the model server's own loader.
* `model_deployment(version, ...)`: a Deployment running labkit's model server on
  data/models/digits-<version>, labelled `app`/`version` (the labels Istio's subsets and its
  telemetry use), reporting `--model-version` (so each answer and each logged prediction says
  which version made it), and logging its answers to the model monitor through the mesh by the
  monitor's cluster name (`http://model-monitor.default/`), as KServe's logger would.
* `ModelTraffic`: users sending V2 requests of `rows` held-out digits each, with a request id
  (`x-request-id`, which the model server logs the prediction under) and optionally a user id
  header; it counts who answered (the response's `model_version`, else Knative's
  `x-labkit-revision` header, else `HTTP <code>`), and sends each request's true labels to
  the model monitors' `/feedback` a little later, as labels arrive later in production. A
  label that reaches the monitor before the logged prediction (the logger is asynchronous) is
  sent again later. `send(n)` runs n requests and returns; `with traffic:` runs until the block
  ends (for a rollout). `rate` paces the requests as fortio's `-qps` does (request i is due i/rate
  seconds after the start), as users arrive at their own pace; without it every worker sends its
  next request as soon as the last is answered.
* `watch_rollout(...)`: poll a Canary's status until the rollout started by the last apply ends
  (Flagger's "Promotion completed!" or "Canary failed!" event), keeping each change of phase
  and canary weight; `timeline(detail)`: a Canary's events as (seconds since the first, type,
  message).

Inputs are drawn from a seeded generator per request index, so who is asked what does not
depend on thread timing (who *answers* does: that is the traffic split).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from labkit.inference.runtimes import load_model
from labkit.params import check_range

__all__ = ["MODELS", "ModelTraffic", "holdout", "holdout_accuracy", "inference_service",
           "knative_model_service", "model_deployment", "timeline", "watch_rollout"]

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
MONITOR_URL = "http://model-monitor.default/"
"""The monitor's name in the mesh; a meshed pod reaches it through its sidecar by this name."""
FEEDBACK_DELAY = 0.3
"""Seconds between an answer and its label (long enough for the logger to deliver first)."""
FEEDBACK_RETRIES = 20


@cache
def holdout() -> tuple[np.ndarray, np.ndarray]:
    """(labels, pixels) of the held-out digits: 540 rows of 64 pixel values."""
    table = np.loadtxt(MODELS / "digits-holdout.csv", delimiter=",", skiprows=1, dtype=int)
    return table[:, 0], table[:, 1:].astype(float)


def holdout_accuracy(version: str) -> float:
    """Accuracy of data/models/digits-<version> on the held-out digits."""
    labels, pixels = holdout()
    model = load_model(f"digits-{version}", MODELS / f"digits-{version}")
    return float(np.mean(model.predict(pixels) == labels))


def model_deployment(version: str, *, name: str | None = None, app: str = "digits",
                     replicas: int = 1, namespace: str = "default",
                     logger_url: str = MONITOR_URL) -> dict[str, Any]:
    """A Deployment serving digits-<version> as model `digits` (V2 protocol, port 8080)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name or f"{app}-{version}", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app, **({} if name == app else {"version": version})}},
            "template": {
                "metadata": {"labels": {"app": app, **({} if name == app else {"version": version})}},
                "spec": {"containers": [{
                    "name": "kserve-container", **_server(version, port=8080),
                    "args": [*_server(version)["args"], "--inference-service", "digits", "--namespace", namespace,
                             "--logger-mode", "response", f"--logger-url={logger_url}"],
                    "ports": [{"containerPort": 8080}],
                }]},
            },
        },
    }


def _server(version: str, port: int | None = None) -> dict[str, Any]:
    """labkit's model server on digits-<version>, ready once the model is loaded."""
    probe: dict[str, Any] = {"path": "/v2/health/ready", **({"port": port} if port else {})}
    return {"image": "kserve/sklearnserver",
            "command": [sys.executable, "-m", "labkit.inference.server"],
            "args": ["--model-name", "digits", "--storage-uri", str(MODELS / f"digits-{version}"),
                     "--model-version", version],
            "readinessProbe": {"httpGet": probe}}


def knative_model_service(version: str, traffic: Sequence[Mapping[str, Any]] | None = None, *,
                          name: str = "digits-kn") -> dict[str, Any]:
    """A Knative Service whose revision `<name>-<version>` serves digits-<version>, kept at one
    pod (min-scale 1, so the split is not muddled by cold starts), with `traffic` if given."""
    spec: dict[str, Any] = {"template": {
        "metadata": {"name": f"{name}-{version}",
                     "annotations": {"autoscaling.knative.dev/min-scale": "1"}},
        "spec": {"containers": [_server(version)]}}}
    if traffic is not None:
        spec["traffic"] = [dict(t) for t in traffic]
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name}, "spec": spec}


def inference_service(version: str, canary_percent: int | None = None, *,
                      name: str = "digits") -> dict[str, Any]:
    """A KServe InferenceService serving digits-<version> (V2), with canaryTrafficPercent."""
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}, "protocolVersion": "v2",
                                           "storageUri": str(MODELS / f"digits-{version}")}}
    if canary_percent is not None:
        predictor = {"canaryTrafficPercent": canary_percent, **predictor}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name}, "spec": {"predictor": predictor}}


def _served_by(response: httpx.Response) -> str:
    if response.status_code == 200:
        version = response.json().get("model_version")
        return version or response.headers.get("x-labkit-revision", "unknown")
    return f"HTTP {response.status_code}"


class ModelTraffic:
    """Users asking the digits model, and their labels sent to the monitors afterwards."""

    def __init__(self, url: str, *, proxy: str | None = None, monitors: Sequence[str] = (),
                 rows: int = 10, users: int | None = None, user_header: str = "x-user",
                 headers: Mapping[str, str] | None = None, seed: int = 0, workers: int = 4,
                 rate: float | None = None) -> None:
        self.url = url.rstrip("/") + "/v2/models/digits/infer"
        self.monitors = [m.rstrip("/") + "/feedback" for m in monitors]
        self.rows, self.users, self.user_header = rows, users, user_header
        self.headers = dict(headers or {})
        self.seed, self.workers = seed, workers
        self.rate = None if rate is None else check_range("rate", rate, 0, math.inf, closed="neither")
        """Requests per second over all workers, or None: as fast as they are answered."""
        self.served: Counter[str] = Counter()
        """Who answered: model version (or revision), or `HTTP <code>`."""
        self.by_user: dict[str, Counter[str]] = defaultdict(Counter)
        self.correct: Counter[str] = Counter()
        """Rows answered right per version, as the client (who knows the labels) sees it."""
        self.answered_rows: Counter[str] = Counter()
        self.labelled = 0
        """Rows the first monitor accepted feedback for."""
        self.feedback_errors: list[str] = []
        self._http = httpx.Client(proxy=proxy, timeout=30)
        self._monitor_http = httpx.Client(timeout=30)
        self._pending: list[tuple[float, int, int, str, list[int]]] = []
        """(due time, attempts, monitor index, request id, labels)"""
        self._lock = threading.Lock()
        self._next = 0
        self._paced_from = (0, 0.0)
        """(request index, monotonic time) the pacing counts from: the start of a run."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- one request -----------------------------------------------------------------------

    def _request(self, index: int) -> None:
        labels, pixels = holdout()
        rng = np.random.default_rng([self.seed, index])
        rows = rng.integers(0, len(labels), self.rows)
        headers = {**self.headers, "x-request-id": str(uuid.uuid4())}
        user = None
        if self.users:
            user = f"user-{int(rng.integers(self.users))}"
            headers[self.user_header] = user
        body = {"inputs": [{"name": "input-0", "shape": [self.rows, 64], "datatype": "FP64",
                            "data": pixels[rows].tolist()}]}
        try:
            response = self._http.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as error:
            who = f"error {type(error).__name__}"
            with self._lock:
                self.served[who] += 1
            return
        who = _served_by(response)
        truth = labels[rows].tolist()
        with self._lock:
            self.served[who] += 1
            if user is not None:
                self.by_user[user][who] += 1
            if response.status_code == 200:
                predicted = response.json()["outputs"][0]["data"]
                self.correct[who] += int(np.sum(np.array(predicted) == labels[rows]))
                self.answered_rows[who] += self.rows
                due = time.monotonic() + FEEDBACK_DELAY
                for m in range(len(self.monitors)):
                    self._pending.append((due, 0, m, headers["x-request-id"], truth))

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set():
                return None
            index, self._next = self._next, self._next + 1
        self._stop.wait(self._until_due(index))  # a rollout's end stops a paced wait at once
        return None if self._stop.is_set() else index

    def _start_pacing(self) -> None:
        self._paced_from = (self._next, time.monotonic())

    def _until_due(self, index: int) -> float:
        """Seconds until request `index` is due (0 or less: now)."""
        if self.rate is None:
            return 0.0
        first, started = self._paced_from
        return started + (index - first) / self.rate - time.monotonic()

    # --- feedback ------------------------------------------------------------------------

    def _flush(self, force: bool = False) -> None:
        """Post the labels that are due; a label whose prediction is not logged yet waits."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending if force or p[0] <= now]
            self._pending = [p for p in self._pending if not (force or p[0] <= now)]
        for m, url in enumerate(self.monitors):
            items = [p for p in due if p[2] == m]
            while items:
                answer = self._monitor_http.post(url, json=[{"id": p[3], "label": p[4]} for p in items])
                if answer.status_code == 200:
                    if m == 0:
                        self.labelled += answer.json()["rows"]
                    break
                where = re.match(r"\[(\d+)\]", answer.json().get("at", ""))
                if answer.status_code != 404 or where is None:
                    self.feedback_errors.append(answer.text)
                    break
                late = items.pop(int(where.group(1)))
                if late[1] < FEEDBACK_RETRIES:
                    with self._lock:
                        self._pending.append((now + FEEDBACK_DELAY, late[1] + 1, *late[2:]))
                else:
                    self.feedback_errors.append(answer.text)

    def _feedback_loop(self) -> None:
        while not self._stop.wait(FEEDBACK_DELAY):
            self._flush()

    def settle(self, limit: float = 30.0) -> None:
        """Send every label still waiting (retrying the ones the monitor has not logged yet)."""
        deadline = time.monotonic() + limit
        while self._pending and time.monotonic() < deadline:
            self._flush(force=True)
            if self._pending:
                self._stop.wait(FEEDBACK_DELAY)

    # --- driving -------------------------------------------------------------------------

    def send(self, n: int) -> ModelTraffic:
        """Send n requests (over `workers` connections) and their labels; return self."""
        self._start_pacing()
        start = self._next
        self._next += n

        def paced(index: int) -> None:
            time.sleep(max(0.0, self._until_due(index)))
            self._request(index)

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(paced, range(start, start + n)))
        self.settle()
        return self

    def _loop(self) -> None:
        while (index := self._take()) is not None:
            self._request(index)

    def __enter__(self) -> ModelTraffic:
        self._stop.clear()
        self._start_pacing()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.workers)]
        self._threads.append(threading.Thread(target=self._feedback_loop, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.settle()

    def accuracy(self) -> dict[str, float]:
        """Per version, the share of rows answered right (the client's own count)."""
        return {v: self.correct[v] / n for v, n in sorted(self.answered_rows.items()) if n}


def timeline(detail: Mapping[str, Any]) -> list[tuple[float, str, str]]:
    """A Canary's events (cluster.get("Canary", ...).status.detail) as
    (seconds since the first event, type, message)."""
    events = detail["events"]
    if not events:
        return []

    def seconds(event: Mapping[str, Any]) -> float:
        return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()

    start = seconds(events[0])
    return [(round(seconds(e) - start, 2), e["type"], e["message"]) for e in events]


FINISHED = ("Promotion completed!", "Canary failed!")


def watch_rollout(cluster: Any, name: str, namespace: str, since_event: int,
                  limit: float = 240.0) -> list[tuple[float, str, int]]:
    """(seconds since the watch began, phase, canary weight) at each change, until an event after
    index `since_event` says the rollout finished. Polls the status (what `kubectl get canary -w`
    shows); the limit only stops a rollout that never ends."""
    start = time.monotonic()
    seen: list[tuple[float, str, int]] = []
    while True:
        detail = cluster.get("Canary", name, namespace).status.detail
        state = (detail["status"]["phase"], int(detail["status"].get("canaryWeight", 0)))
        if not seen or seen[-1][1:] != state:
            seen.append((round(time.monotonic() - start, 2), *state))
        if any(e["message"].startswith(FINISHED) for e in detail["events"][since_event:]):
            return seen
        if time.monotonic() - start > limit:
            raise TimeoutError(f"Canary {namespace}/{name} still {state} after {limit:g} s; last events: "
                               f"{[e['message'] for e in detail['events'][-3:]]}")
        time.sleep(0.05)
