"""Where a KServe request's time goes: the serverless inference path, hop by hop, simulated.

The path is the one lab 09 measures live (and a cluster runs):

    client sidecar -> (mTLS) -> ingress / server sidecar -> activator (only while the revision
    is scaled to zero or short of capacity) -> queue-proxy -> [transformer -> queue-proxy] ->
    model server: batch wait, decode, predict, encode

How it is built, and why: the part with dynamics — arrivals, the KPA scaling the predictor's
revision (to zero and back), the activator holding requests during a cold start, queueing at
the queue-proxy — is `labkit.sim.autoscaling.simulate_autoscaling` (simpy, with Knative's own
decider code), run with the model server's time per request as its service time and process
start + model load as its cold start. This module adds what a request meets on top, per hop,
from the student's parameters: proxy hops (with or without mTLS), the activator and
queue-proxy hops, the transformer, and the model server's decode / predict / encode, with
adaptive batching. Nothing here re-implements autoscaling.

Simplifications, on purpose:

* Per-hop costs are drawn from a lognormal with the given mean and a CV of 0.3 (seeded);
  they do not grow with load (a loopback sidecar does not saturate at lab rates).
* Batching (maxBatchSize B, maxLatency L) is modelled on average: at a per-pod arrival rate r,
  a batch fills in min(L, (B - 1) / r) and holds b = min(B, 1 + r L) rows; a request waits a
  uniform share of the fill time, and one predict call costs `predict_ms * (1 + per_row (b - 1))`,
  where `per_row` is the extra cost of each further row relative to the first (small for
  tree ensembles, as measured in lab 09). The revision sees 1/b of a predict per request.
* A cold request's wait for its pod is split into process start and model load in proportion
  to their means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit.params import check_range, check_seed
from labkit.serving.autoscaler_config import WINDOW_MAX, WINDOW_MIN, AutoscalerConfig
from labkit.sim.autoscaling import AutoscalingResult, simulate_autoscaling
from labkit.sim.results import Scalar, SimResult
from labkit.sim.workloads import Poisson, Workload
from labkit.stats import percentile

__all__ = ["HOPS", "MODEL_PRESETS", "DataflowResult", "simulate_dataflow"]

HOPS = ("proxy", "mtls", "activator", "cold_start_process", "cold_start_model_load", "queue_wait",
        "queue_proxy", "transformer", "batch_wait", "decode", "predict", "encode")
"""The hops of a request, in path order (milliseconds each in `DataflowResult.hops`)."""

MODEL_PRESETS: dict[str, dict[str, float]] = {
    "iris-logistic-regression": {"model_load": 0.8, "decode_ms": 0.03, "predict_ms": 0.2,
                                 "encode_ms": 0.01, "batch_row_cost": 0.05},
    "digits-random-forest": {"model_load": 0.85, "decode_ms": 0.04, "predict_ms": 3.3,
                             "encode_ms": 0.02, "batch_row_cost": 0.01},
    "large-model-2GB": {"model_load": 25.0, "decode_ms": 0.1, "predict_ms": 40.0,
                        "encode_ms": 0.05, "batch_row_cost": 0.05},
}
"""Typical values: the first two as measured on a 2-core laptop (lab 09 measures yours); the
third is a stand-in for a model whose weights take half a minute to download and load."""

_CV = 0.3


@dataclass(frozen=True)
class DataflowResult(SimResult):
    """Per served request (arrays of equal length): `hops[name]` in ms, `latency_ms` (their
    sum), `cold` (it waited for a pod to start), `arrival` (s). Plus the run's settings and
    the underlying `AutoscalingResult` (pods over time, cold starts)."""

    settings: dict[str, Any]
    hops: dict[str, np.ndarray] = field(repr=False)
    latency_ms: np.ndarray = field(repr=False)
    cold: np.ndarray = field(repr=False)
    arrival: np.ndarray = field(repr=False)
    autoscaling: AutoscalingResult = field(repr=False)
    batch_rows: float = 1.0

    @property
    def requests(self) -> int:
        return int(self.latency_ms.size)

    def percentile(self, q: float, hop: str | None = None) -> float:
        """The q-th percentile of the end-to-end latency (or of one hop), in ms."""
        return percentile(self.latency_ms if hop is None else self.hops[hop], q)

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def breakdown(self, which: str = "mean") -> dict[str, float]:
        """Milliseconds per hop: "mean" over all requests, "p50" / "p99" (the hops of the
        requests around that percentile of the total, so the bars add up to it), or "warm" /
        "cold" (means over those requests)."""
        if which == "mean":
            chosen = np.ones(self.requests, bool)
        elif which in ("warm", "cold"):
            chosen = self.cold if which == "cold" else ~self.cold
        elif which in ("p50", "p99"):
            target = self.percentile(float(which[1:]))
            order = np.argsort(np.abs(self.latency_ms - target))
            chosen = np.zeros(self.requests, bool)
            chosen[order[: max(1, self.requests // 100)]] = True
        else:
            raise ValueError(f"which must be mean, p50, p99, warm or cold, got {which!r}")
        if not chosen.any():
            return dict.fromkeys(HOPS, 0.0)
        return {hop: float(self.hops[hop][chosen].mean()) for hop in HOPS}

    def dominant_hop(self, which: str = "mean") -> str:
        """The hop with the largest share of the time."""
        parts = self.breakdown(which)
        return max(parts, key=parts.__getitem__)

    def summary(self) -> dict[str, Scalar]:
        return {"requests": self.requests, "cold_requests": int(self.cold.sum()),
                "cold_starts": self.autoscaling.cold_starts, "p50_ms": round(self.p50, 3),
                "p99_ms": round(self.p99, 3), "mean_ready_pods": round(self.autoscaling.mean_ready_pods, 3),
                "batch_rows": round(self.batch_rows, 2), "dominant_hop": self.dominant_hop()}


def _draw(rng: np.random.Generator, mean_ms: float, n: int) -> np.ndarray:
    """Lognormal times with the given mean and CV 0.3 (zeros when the mean is 0)."""
    if mean_ms <= 0:
        return np.zeros(n)
    sigma2 = np.log1p(_CV ** 2)
    return rng.lognormal(np.log(mean_ms) - sigma2 / 2, np.sqrt(sigma2), n)


def simulate_dataflow(
    *,
    arrival_rate: float = 2.0,
    workload: Workload | None = None,
    duration: float = 600.0,
    seed: int = 1,
    model: str | None = None,
    min_replicas: int = 0,
    max_replicas: int = 0,
    scale_target: int = 10,
    container_concurrency: int = 0,
    stable_window: float = 60.0,
    process_start: float = 0.15,
    model_load: float = 0.8,
    proxy_ms: float = 0.12,
    proxy_hops: int = 2,
    mtls: bool = True,
    mtls_ms: float = 0.08,
    activator_ms: float = 0.3,
    queue_proxy_ms: float = 0.15,
    transformer_ms: float = 0.0,
    decode_ms: float = 0.03,
    predict_ms: float = 0.2,
    encode_ms: float = 0.01,
    max_batch_size: int = 1,
    max_latency_ms: float = 5.0,
    batch_row_cost: float = 0.05,
) -> DataflowResult:
    """Simulate `duration` seconds of requests on one InferenceService's path.

    Traffic: Poisson at `arrival_rate` req/s unless a `workload` is given.
    Scaling (the predictor's InferenceService fields): `min_replicas` (0 = scale to zero),
    `max_replicas` (0 = no bound), `scale_target` (concurrency per pod),
    `container_concurrency`, and the KPA `stable_window` (s) after which an idle revision goes
    to zero. Cold start: `process_start` + `model_load` seconds.
    Mesh: `proxy_hops` sidecar hops of `proxy_ms` each, plus `mtls_ms` each when `mtls`.
    Knative: `activator_ms` when the activator is in the path, `queue_proxy_ms` per queue-proxy.
    Transformer: `transformer_ms` (0 = none; else its time plus a second queue-proxy hop).
    Model server: `decode_ms`, `predict_ms` (for one row), `encode_ms`; batching with
    `max_batch_size` > 1 and `max_latency_ms`, `batch_row_cost` as described in the module.
    `model`: a key of MODEL_PRESETS, whose values override the model server's parameters.
    """
    if model is not None:
        if model not in MODEL_PRESETS:
            raise ValueError(f"model must be one of {sorted(MODEL_PRESETS)}, got {model!r}")
        preset = MODEL_PRESETS[model]
        model_load, decode_ms, predict_ms = preset["model_load"], preset["decode_ms"], preset["predict_ms"]
        encode_ms, batch_row_cost = preset["encode_ms"], preset["batch_row_cost"]
    for name, value in (("duration", duration), ("process_start", process_start), ("model_load", model_load),
                        ("proxy_ms", proxy_ms), ("mtls_ms", mtls_ms), ("activator_ms", activator_ms),
                        ("queue_proxy_ms", queue_proxy_ms), ("transformer_ms", transformer_ms),
                        ("decode_ms", decode_ms), ("predict_ms", predict_ms), ("encode_ms", encode_ms),
                        ("max_latency_ms", max_latency_ms), ("batch_row_cost", batch_row_cost)):
        check_range(name, value, 0, closed="left")
    for name, value, low in (("min_replicas", min_replicas, 0), ("max_replicas", max_replicas, 0),
                             ("scale_target", scale_target, 1), ("proxy_hops", proxy_hops, 0),
                             ("container_concurrency", container_concurrency, 0),
                             ("max_batch_size", max_batch_size, 1)):
        check_range(name, value, low, integer=True)
    seed = check_seed(seed)
    # Knative's bounds on the stable window (config-autoscaler's stable-window).
    check_range("stable_window", stable_window, WINDOW_MIN, WINDOW_MAX)
    if max_replicas and min_replicas > max_replicas:
        raise ValueError(f"min_replicas ({min_replicas}) must be <= max_replicas ({max_replicas})")
    if workload is None:
        workload = Poisson(check_range("arrival_rate", arrival_rate, 0, closed="neither"))

    per_pod_rate = workload.mean_rate / max(1, min_replicas)
    if max_batch_size > 1:
        fill_ms = min(max_latency_ms, (max_batch_size - 1) / max(per_pod_rate, 1e-9) * 1000.0)
        rows = min(float(max_batch_size), 1.0 + per_pod_rate * max_latency_ms / 1000.0)
    else:
        fill_ms, rows = 0.0, 1.0
    predict_call_ms = predict_ms * (1.0 + batch_row_cost * (rows - 1.0))
    service_ms = decode_ms + encode_ms + predict_call_ms / rows + transformer_ms

    annotations = {"autoscaling.knative.dev/min-scale": str(min_replicas),
                   "autoscaling.knative.dev/target": str(scale_target),
                   "autoscaling.knative.dev/window": f"{stable_window:g}s"}
    if max_replicas:
        annotations["autoscaling.knative.dev/max-scale"] = str(max_replicas)
    if min_replicas == 0:
        annotations["autoscaling.knative.dev/initial-scale"] = "0"
    flow = simulate_autoscaling(
        workload, annotations, duration=duration, seed=seed,
        container_concurrency=container_concurrency,
        config=AutoscalerConfig(allow_zero_initial_scale=True),
        service_time=max(service_ms, 1e-3) / 1000.0, service_distribution="lognormal", service_cv=_CV,
        cold_start=process_start + model_load, cold_start_cv=0.1,
        initially_ready=min_replicas > 0,
    )
    n = flow.served
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    in_path = flow.timeline.get("activator_in_path", np.zeros(0))
    second = np.clip(flow.arrival.astype(int), 0, max(in_path.size - 1, 0))
    via_activator = (in_path[second] > 0) if in_path.size else np.zeros(n, bool)
    wait_ms = flow.queue_delay * 1000.0
    startup = process_start + model_load
    cold_ms = np.where(flow.cold, wait_ms, 0.0)
    hops = {
        "proxy": _draw(rng, proxy_ms * proxy_hops, n),
        "mtls": _draw(rng, mtls_ms * proxy_hops, n) if mtls else np.zeros(n),
        "activator": np.where(via_activator | flow.cold, _draw(rng, activator_ms, n), 0.0),
        "cold_start_process": cold_ms * (process_start / startup if startup else 0.0),
        "cold_start_model_load": cold_ms * (model_load / startup if startup else 0.0),
        "queue_wait": np.where(flow.cold, 0.0, wait_ms),
        "queue_proxy": _draw(rng, queue_proxy_ms * (2 if transformer_ms else 1), n),
        "transformer": _draw(rng, transformer_ms, n),
        "batch_wait": rng.uniform(0.0, fill_ms, n) if fill_ms else np.zeros(n),
        "decode": _draw(rng, decode_ms, n),
        "predict": _draw(rng, predict_call_ms, n),
        "encode": _draw(rng, encode_ms, n),
    }
    latency = np.sum([hops[h] for h in HOPS], axis=0) if n else np.zeros(0)
    settings = {k: v for k, v in locals().items() if k in _SETTINGS}  # the arguments, as used
    settings["workload"] = repr(workload)
    return DataflowResult(settings=settings, hops=hops, latency_ms=latency, cold=flow.cold.copy(),
                          arrival=flow.arrival.copy(), autoscaling=flow, batch_rows=rows)


_SETTINGS = frozenset(simulate_dataflow.__code__.co_varnames[:simulate_dataflow.__code__.co_kwonlyargcount])
