"""Flagger canary rollouts in simulated time: the same analysis step, a modelled fleet.

The story, one analysis interval at a time (simpy processes, simulated seconds):

* **Users** send requests at `Traffic.rate` per second. Each interval the **mesh** routes them
  as the routes in force say: Flagger's weights (Envoy picks per request, so the canary gets a
  binomial share), or, for A/B testing (`analysis.match`), every request whose headers match
  goes to the canary and the rest to the primary; with `mirror` the canary also gets a copy of
  `mirrorWeight` % of the primary's requests, whose answers nobody sees.
* The **primary** and the **new version** answer: each version has a 5xx probability, a
  lognormal latency and an accuracy (`labkit.sim.canary_traffic.Version`); the new version is
  the primary made worse by the chosen failure (errors, latency, quality, or errors for one
  segment of users only). Their destination sidecars count requests by response code and
  duration bucket (`istio_requests_total`, `istio_request_duration_milliseconds_bucket`).
* A fraction of predictions gets its **true label** back after an exponential delay: the
  model monitor joins it by request id, so the accuracy per version is known only as labels
  arrive.
* Every `analysis.interval`, **Flagger** reads its metrics as its Istio queries do
  (fluxcd/flagger pkg/metrics/observers/istio.go): `request-success-rate` is the non-5xx
  share, in %, of the requests the canary workload's own (destination) sidecar counted over
  the metric's `interval`, and `request-duration` the `histogram_quantile(0.99, ...)` of its
  duration buckets (no requests: "no values found", a failed check, as in Flagger). Its
  `rollout` webhooks are asked too; a quality gate (a webhook whose metadata has
  `minAccuracy` or `maxDrop`) is answered by the model monitor's own policy code
  (`labkit.quality.gate.judge`) over the labels joined so far; every other webhook answers
  2xx (approvals granted, load tests add no traffic). Then it calls
  `labkit.flagger.analysis.step`, the function the live controller calls, and applies what
  it returns: the new routes, and `promote` (from then on the primary runs the new version).

The rollout ends when the Canary reaches `Succeeded` or `Failed`.

Speed: one interval of traffic is drawn in aggregate with numpy (`canary_traffic` explains
why that is exact), so a rollout costs a few dozen numpy calls and one `step` per interval,
whatever the request rate: 1,000 rollouts of 10 steps take a few seconds, about 40 % of it in
the analysis step itself (see bench/bench_canary.py). Simplifications: pods are ready at once (no scale-up delay, so
`canary_not_ready` is always empty), latency does not depend on load, and the metric windows
are whole multiples of a time slice (the greatest common divisor of the analysis and metric
intervals).

    run = simulate_canary(failure="errors", seed=1)
    run.outcome, run.detection_seconds, run.exposed_requests, run.exposed_users
    print(run); run.summary(); run.timeline[3].messages
    batch = run_many(1000, seed=1, failure="none"); batch.rollback_rate
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from labkit.flagger import analysis
from labkit.flagger.models import BUILTIN_METRICS, Canary, CanaryWebhook, go_duration
from labkit.manifests import load
from labkit.params import check_range, check_seed
from labkit.quality.gate import GateError, judge, parse_webhook
from labkit.quality.ledger import Accuracy
from labkit.sim.canary_traffic import (
    FAILURES,
    Served,
    Traffic,
    Version,
    canary_version,
    cohort,
    histogram_quantile,
    segment_users,
    serve,
)
from labkit.sim.results import Scalar, SimResult
from labkit.stats import percentile, percentiles

__all__ = [
    "FAILURES",
    "CanaryBatch",
    "CanaryRun",
    "Decision",
    "Traffic",
    "Version",
    "canary_manifest",
    "run_many",
    "simulate_canary",
]

PRIMARY_REVISION = "primary-template"
CANARY_REVISION = "canary-template"
OLD_VERSION, NEW_VERSION = "v1", "v2"
"""The model versions' labels in the model monitor (the quality gate's metadata names them)."""
MAX_STEPS = 1000
"""A rollout still unfinished after this many analysis steps is stopped ("unfinished")."""


def canary_manifest(*, interval: str = "1m", threshold: int = 5, max_weight: int = 50,
                    step_weight: int = 10, min_success_rate: float | None = 99.0,
                    max_p99_ms: float | None = 500.0, min_accuracy: float | None = None,
                    min_samples: int = 50, iterations: int | None = None,
                    match: Sequence[Mapping[str, Any]] | None = None, mirror: bool = False,
                    name: str = "model") -> dict[str, Any]:
    """A Flagger Canary for a model Deployment `name`, with the lab's gates: the built-in
    success-rate and p99 metrics and, with `min_accuracy` (percent), the model monitor's
    quality gate as a `rollout` webhook. `match` (with `iterations`) makes it an A/B test."""
    metrics = []
    if min_success_rate is not None:
        metrics.append({"name": "request-success-rate", "interval": interval,
                        "thresholdRange": {"min": min_success_rate}})
    if max_p99_ms is not None:
        metrics.append({"name": "request-duration", "interval": interval,
                        "thresholdRange": {"max": max_p99_ms}})
    webhooks = []
    if min_accuracy is not None:
        webhooks.append({"name": "quality-gate", "type": "rollout",
                         "url": "http://model-monitor.default/gate",
                         "metadata": {"canary": NEW_VERSION, "primary": OLD_VERSION, "model": name,
                                      "minAccuracy": f"{min_accuracy:g}",
                                      "minSamples": str(min_samples)}})
    a: dict[str, Any] = {"interval": interval, "threshold": threshold, "metrics": metrics}
    if webhooks:
        a["webhooks"] = webhooks
    if match:
        a.update(match=[dict(m) for m in match], iterations=iterations or 10)
    elif iterations:
        a["iterations"] = iterations
    else:
        a.update(maxWeight=max_weight, stepWeight=step_weight)
    if mirror:
        a["mirror"] = True
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": "istio",
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "service": {"port": 8080}, "analysis": a}}


@dataclass(frozen=True)
class Decision:
    """One analysis step as the simulator saw it: when, the status and routes it left
    (`weight`: the canary's route weight; with A/B testing it applies to the matching
    requests), what Flagger read (metric name -> value, None for "no values found"; a quality
    gate's accuracy in % under "<hook> accuracy"), the webhooks' answers, and its events."""

    time: float
    phase: str
    weight: int
    failed_checks: int
    iterations: int
    readings: dict[str, float | None]
    webhooks: dict[str, analysis.HookResult]
    messages: tuple[str, ...]


@dataclass(frozen=True)
class CanaryRun(SimResult):
    """One rollout. Times in simulated seconds from the new revision's arrival.

    `exposed_*` count user requests answered by the new version (the canary, and the primary
    once it was promoted) and the distinct users who sent them; mirrored copies and load
    tests expose nobody. `total_requests` counts every user request until the end.
    """

    outcome: str
    """"promoted", "rolled back" or "unfinished"."""
    bad: bool
    """The new version is worse than the primary (failure is not "none")."""
    ended_at: float
    first_traffic_at: float | None
    first_failed_check_at: float | None
    max_weight: int
    total_requests: int
    exposed_requests: int
    exposed_users: int
    exposed_errors: int
    ab_users: int | None
    """With A/B testing, how many users' requests match (only they can reach the canary)."""
    timeline: list[Decision] = field(repr=False)
    exposed: np.ndarray = field(repr=False, compare=False)
    """Per user index: did the user get an answer from the new version."""

    @property
    def rolled_back(self) -> bool:
        return self.outcome == "rolled back"

    @property
    def detection_seconds(self) -> float | None:
        """From the canary's first request to the first failed check (None: none failed)."""
        if self.first_failed_check_at is None or self.first_traffic_at is None:
            return None
        return self.first_failed_check_at - self.first_traffic_at

    @property
    def exposed_share(self) -> float:
        return self.exposed_requests / self.total_requests if self.total_requests else 0.0

    def summary(self) -> dict[str, Scalar]:
        return {"outcome": self.outcome, "bad": self.bad, "ended_at": self.ended_at,
                "detection_seconds": self.detection_seconds, "max_weight": self.max_weight,
                "total_requests": self.total_requests, "exposed_requests": self.exposed_requests,
                "exposed_share": self.exposed_share, "exposed_users": self.exposed_users,
                "exposed_errors": self.exposed_errors, "ab_users": self.ab_users}

    def __str__(self) -> str:
        detected = (f"first failed check {self.detection_seconds:g} s after the canary's first request"
                    if self.detection_seconds is not None else "no failed check")
        reach = (f"max canary weight {self.max_weight}%" if self.ab_users is None
                 else f"A/B: only the {self.ab_users:,} matching users could reach it")
        return "\n".join([
            f"{'bad' if self.bad else 'good'} new version: {self.outcome} at t={self.ended_at:g} s; {detected}",
            (f"exposed to the new version: {self.exposed_requests:,} of {self.total_requests:,} requests "
             f"({self.exposed_share:.1%}), {self.exposed_users:,} users, {self.exposed_errors:,} errors; "
             f"{reach}"),
        ])


@dataclass(frozen=True)
class CanaryBatch(SimResult):
    """Many seeded rollouts of one setting."""

    runs: list[CanaryRun] = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def bad(self) -> bool:
        return bool(self.runs) and self.runs[0].bad

    @property
    def rollback_rate(self) -> float:
        """Rolled back: the detection rate for a bad version, false rollbacks for a good one."""
        return sum(r.rolled_back for r in self.runs) / self.n if self.n else math.nan

    @property
    def detection_rate(self) -> float:
        return self.rollback_rate if self.bad else math.nan

    @property
    def false_rollback_rate(self) -> float:
        return math.nan if self.bad else self.rollback_rate

    def caught_below(self, weight: int) -> float:
        """Share of runs rolled back before the canary weight ever reached `weight` %."""
        return sum(r.rolled_back and r.max_weight < weight for r in self.runs) / self.n

    def exposed_requests(self) -> np.ndarray:
        return np.array([r.exposed_requests for r in self.runs])

    def exposed_users(self) -> np.ndarray:
        return np.array([r.exposed_users for r in self.runs])

    def exposed_share(self) -> np.ndarray:
        return np.array([r.exposed_share for r in self.runs])

    def detection_seconds(self) -> np.ndarray:
        """Per run that had a failed check."""
        return np.array([r.detection_seconds for r in self.runs if r.detection_seconds is not None])

    def summary(self) -> dict[str, Scalar]:
        """Rates over the runs, and the spread of the exposure (median = p50)."""
        share_p50, share_p95 = percentiles(self.exposed_share(), (50, 95)).tolist()
        return {"n": self.n, "bad": self.bad, "rollback_rate": self.rollback_rate,
                "detection_rate": self.detection_rate, "false_rollback_rate": self.false_rollback_rate,
                "exposed_share_p50": share_p50, "exposed_share_p95": share_p95,
                "exposed_users_p50": percentile(self.exposed_users(), 50)}

    def __str__(self) -> str:
        s = self.summary()
        rate = (f"detection rate {self.detection_rate:.1%}" if self.bad
                else f"false rollbacks {self.false_rollback_rate:.1%}")
        return (f"{self.n} rollouts of a {'bad' if self.bad else 'good'} version: {rate}; "
                f"exposed share median {s['exposed_share_p50']:.1%}, p95 {s['exposed_share_p95']:.1%}; "
                f"exposed users median {s['exposed_users_p50']:g}")


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class _Setup:
    """Everything a run needs that does not depend on the seed (parsed once per batch)."""

    canary: Canary
    traffic: Traffic
    primary: Version
    new: Version
    bad: bool
    slice_seconds: float
    windows: dict[str, int]          # metric name -> slices its interval covers
    gates: dict[str, int]            # quality-gate webhook name -> its window (0: all labels)
    ab_users: np.ndarray | None      # users whose requests analysis.match sends to the canary
    segment: np.ndarray
    mirror_share: float
    latency: bool                    # request-duration is read: draw duration buckets
    labels: bool                     # a quality gate reads the canary's labels
    primary_labels: bool             # ... and the primary's (maxDrop)


def _setup(canary: Any, traffic: Traffic, primary: Version, failure: str,
           severity: float | None) -> _Setup:
    model = _canary_model(canary)
    a = model.spec.analysis
    interval = a.interval_seconds
    windows_s: dict[str, float] = {}
    for i, m in enumerate(a.metrics):
        if m.name not in BUILTIN_METRICS or m.template_ref is not None:
            raise ValueError(
                f"spec.analysis.metrics[{i}]: metric {m.name!r} is not simulated; the simulator "
                f"reads {' and '.join(BUILTIN_METRICS)} and answers a quality-gate webhook")
        windows_s[m.name] = go_duration(m.interval or "1m", ("spec", "analysis", "metrics", i, "interval"))
    slice_ms = math.gcd(*(round(s * 1000) for s in [interval, *windows_s.values()]))
    if slice_ms <= 0:
        raise ValueError("spec.analysis.interval: must be at least 1ms")
    slice_seconds = slice_ms / 1000
    gates: dict[str, int] = {}
    compares = False
    for i, hook in enumerate(a.webhooks):
        if hook.kind == "rollout" and {"minAccuracy", "maxDrop"} & set(hook.metadata):
            try:
                config = parse_webhook(_gate_payload(model, hook))
            except GateError as exc:
                raise ValueError(f"spec.analysis.webhooks[{i}].{exc}") from None
            gates[hook.name] = config.window
            compares = compares or config.max_drop is not None
    return _Setup(
        canary=model, traffic=traffic, primary=primary,
        new=canary_version(primary, failure, severity), bad=failure != "none",
        slice_seconds=slice_seconds,
        windows={name: max(1, round(s / slice_seconds)) for name, s in windows_s.items()},
        gates=gates,
        ab_users=cohort(a.match, traffic.users, traffic.ab_share) if a.match else None,
        segment=segment_users(traffic.users, traffic.segment),
        mirror_share=(a.mirror_weight if a.mirror_weight is not None else 100) / 100,
        latency="request-duration" in windows_s, labels=bool(gates), primary_labels=compares,
    )


def _canary_model(canary: Any) -> Canary:
    if canary is None:
        canary = canary_manifest()
    objects = [o for o in load(canary) if isinstance(o, Canary)]  # ManifestError: FILE:LINE: path
    if len(objects) != 1:
        raise ValueError(f"expected exactly one Canary, found {len(objects)}")
    return objects[0]


def _gate_payload(canary: Canary, hook: CanaryWebhook, phase: str = analysis.PROGRESSING) -> dict[str, Any]:
    """Flagger's webhook body (pkg/controller/webhook.go CallWebhook)."""
    return {"name": canary.metadata.name, "namespace": canary.metadata.namespace, "phase": phase,
            "checksum": CANARY_REVISION, "metadata": dict(hook.metadata)}


class _Labels:
    """Labelled feedback for one version: arrival times and whether the prediction was right."""

    def __init__(self) -> None:
        self.times: list[np.ndarray] = []
        self.correct: list[np.ndarray] = []

    def add(self, served: Served) -> None:
        if len(served.label_times):
            self.times.append(served.label_times)
            self.correct.append(served.label_correct)

    def accuracy(self, now: float, window: int) -> Accuracy:
        """What the monitor's ledger holds at `now`: every label so far, or the last `window`."""
        if not self.times:
            return Accuracy(0, 0)
        times, correct = np.concatenate(self.times), np.concatenate(self.correct)
        arrived = times <= now
        if window:
            order = np.argsort(times[arrived], kind="stable")[-window:]
            judged = correct[arrived][order]
        else:
            judged = correct[arrived]
        return Accuracy(int(judged.size), int(judged.sum()))


class _Rollout:
    """The simpy processes of one rollout; `simulate_canary` describes the story."""

    def __init__(self, env: simpy.Environment, s: _Setup, rng: np.random.Generator) -> None:
        self.env, self.s, self.rng = env, s, rng
        self.status, self.routes = analysis.CanaryStatus(), analysis.Routes()
        self.promoted = False          # the primary runs the new version
        self.slices: list[Served] = []  # the canary workload's counts per slice
        self.labels = {"canary": _Labels(), "primary": _Labels()}  # by the version's role
        self.exposed_users = np.zeros(s.traffic.users, dtype=bool)
        self.total = self.exposed = self.exposed_errors = 0
        self.first_traffic: float | None = None
        self.first_failure: float | None = None
        self.max_weight = 0
        self.timeline: list[Decision] = []
        self.answers: dict[str, analysis.HookResult] = {}  # webhooks asked during this step
        self.interval_over = env.event()
        self.done = env.event()

    # -- users and the mesh ---------------------------------------------------------------------

    def users(self) -> Any:
        """Requests arrive slice by slice and are routed as the routes in force say; at the end
        of each analysis interval Flagger is woken (so it reads the interval's traffic)."""
        dt = self.s.slice_seconds
        per_interval = round(self.s.canary.spec.analysis.interval_seconds / dt)
        slices = 0
        while not self.done.triggered:
            start = self.env.now
            yield self.env.timeout(dt)
            self._route_slice(start, dt)
            slices += 1
            if slices % per_interval == 0:
                woken, self.interval_over = self.interval_over, self.env.event()
                woken.succeed()

    def _route_slice(self, start: float, dt: float) -> None:
        s, rng, routes = self.s, self.rng, self.routes
        n = int(rng.poisson(s.traffic.rate * dt))
        self.total += n
        if s.ab_users is not None:
            n_new = int(rng.binomial(n, len(s.ab_users) / s.traffic.users)) if routes.canary else 0
            new_users = s.ab_users[rng.integers(0, len(s.ab_users), n_new)] if n_new else None
        else:
            n_new = int(rng.binomial(n, routes.canary / analysis.TOTAL_WEIGHT))
            new_users = rng.integers(0, s.traffic.users, n_new) if n_new else None
        canary = serve(rng, s.new, n_new, new_users, s.segment, start, dt, s.traffic,
                       latency=s.latency, labels=s.labels)
        self._expose(canary, new_users)
        n_primary = n - n_new
        if self.promoted:  # the primary runs the new version now: its users are exposed too
            primary_users = rng.integers(0, s.traffic.users, n_primary) if n_primary else None
            primary = serve(rng, s.new, n_primary, primary_users, s.segment, start, dt, s.traffic,
                            latency=False, labels=s.labels)
            self._expose(primary, primary_users)
            self.labels["canary"].add(primary)
        elif s.primary_labels:
            self.labels["primary"].add(serve(rng, s.primary, n_primary, None, s.segment, start, dt,
                                             s.traffic, latency=False, labels=True))
        if routes.mirrored and n_primary:
            # Copies of primary requests: the canary's sidecar counts them, nobody sees them.
            copies = int(rng.binomial(n_primary, s.mirror_share))
            mirror_users = rng.integers(0, s.traffic.users, copies) if copies else None
            canary = canary + serve(rng, s.new, copies, mirror_users, s.segment, start, dt, s.traffic,
                                    latency=s.latency, labels=s.labels)
        self.labels["canary"].add(canary)
        self.slices.append(canary)
        if canary.requests and self.first_traffic is None:
            self.first_traffic = start

    def _expose(self, served: Served, users: np.ndarray | None) -> None:
        if users is not None:
            self.exposed += served.requests
            self.exposed_errors += served.requests - served.ok
            self.exposed_users[users] = True

    # -- Flagger -------------------------------------------------------------------------------

    def flagger(self) -> Any:
        """Every analysis interval: read the metrics, take one step, apply it."""
        # The Canary was initialised while the old version ran; then the new one was deployed.
        self._step(analysis.Readings(revision=PRIMARY_REVISION))
        for _ in range(MAX_STEPS):
            yield self.interval_over
            readings = self._readings()
            self._step(analysis.Readings(revision=CANARY_REVISION, metrics=readings,
                                         webhook=self._webhook), readings)
            if self.status.phase in (analysis.SUCCEEDED, analysis.FAILED):
                break
        self.done.succeed()

    def _step(self, readings: analysis.Readings, shown: dict[str, float | None] | None = None) -> None:
        before = self.status.failed_checks
        result = analysis.step(self.s.canary, self.status, self.routes, readings, self.env.now)
        self.status, self.routes = result.status, result.routes
        if analysis.PROMOTE in result.actions:
            self.promoted = True
        if self.status.failed_checks > before and self.first_failure is None:
            self.first_failure = self.env.now
        self.max_weight = max(self.max_weight, self.routes.canary)
        self.timeline.append(Decision(
            self.env.now, self.status.phase, self.routes.canary, self.status.failed_checks,
            self.status.iterations, dict(shown or {}), self.answers,
            tuple(e.message for e in result.events)))
        self.answers = {}

    def _readings(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, k in self.s.windows.items():
            recent = self.slices[-k:]
            n = sum(x.requests for x in recent)
            if n == 0:
                out[name] = None  # the query finds no values: the canary got no traffic
            elif name == "request-success-rate":
                out[name] = 100.0 * sum(x.ok for x in recent) / n
            else:
                out[name] = histogram_quantile(0.99, np.sum([x.buckets for x in recent], axis=0))
        for name, window in self.s.gates.items():
            canary = self.labels["canary"].accuracy(self.env.now, window)
            out[f"{name} accuracy"] = None if not canary.labelled else 100.0 * canary.correct / canary.labelled
        return out

    def _webhook(self, hook: CanaryWebhook, phase: str) -> analysis.HookResult:
        if hook.name in self.s.gates:
            config = parse_webhook(_gate_payload(self.s.canary, hook, phase))
            verdict = judge(config, self.labels["canary"].accuracy(self.env.now, config.window),
                            self.labels["primary"].accuracy(self.env.now, config.window))
            answer = analysis.HookResult(verdict.status == 200, f"{verdict.status} {verdict.reason}")
        else:
            answer = analysis.HookResult(True)
        self.answers[hook.name] = answer
        return answer

    def result(self) -> CanaryRun:
        ended = {analysis.SUCCEEDED: "promoted", analysis.FAILED: "rolled back"}
        return CanaryRun(
            outcome=ended.get(self.status.phase, "unfinished"), bad=self.s.bad, ended_at=self.env.now,
            first_traffic_at=self.first_traffic, first_failed_check_at=self.first_failure,
            max_weight=self.max_weight, total_requests=self.total, exposed_requests=self.exposed,
            exposed_users=int(self.exposed_users.sum()), exposed_errors=self.exposed_errors,
            ab_users=None if self.s.ab_users is None else len(self.s.ab_users),
            timeline=self.timeline, exposed=self.exposed_users)


def _run(s: _Setup, seed: int | np.random.SeedSequence) -> CanaryRun:
    env = simpy.Environment()
    rollout = _Rollout(env, s, np.random.default_rng(seed))
    env.process(rollout.users())
    env.process(rollout.flagger())
    env.run(until=rollout.done)
    return rollout.result()


def simulate_canary(canary: Any = None, *, traffic: Traffic | None = None, primary: Version | None = None,
                    failure: str = "none", severity: float | None = None, seed: int = 1) -> CanaryRun:
    """One rollout of a new version after the Canary was initialised.

    `canary`: a Flagger Canary (mapping, YAML text or path, or model; default
    `canary_manifest()`); `failure`: how the new version is worse ("none", "errors",
    "latency", "quality", "segment") and `severity` how much (see
    `labkit.sim.canary_traffic.DEFAULT_SEVERITY`).
    """
    return _run(_setup(canary, traffic or Traffic(), primary or Version(), failure, severity), check_seed(seed))


def run_many(n: int, seed: int = 1, canary: Any = None, *, traffic: Traffic | None = None,
             primary: Version | None = None, failure: str = "none",
             severity: float | None = None) -> CanaryBatch:
    """`n` independent rollouts (seeds spawned from `seed`) of one setting."""
    n = check_range("n", n, 1, integer=True)
    seed = check_seed(seed)
    s = _setup(canary, traffic or Traffic(), primary or Version(), failure, severity)
    return CanaryBatch([_run(s, child) for child in np.random.SeedSequence(seed).spawn(n)])
