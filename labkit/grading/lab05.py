"""Checks for labs/05_knative_autoscaling.ipynb.

Each task's givens live here, next to its check, so the notebook shows the same numbers the
check recomputes from. Expected answers come from labkit's KPA decider (`labkit.serving.kpa`)
and its simulator (`labkit.sim.autoscaling`); no live component is involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from labkit.grading.checks import check_choices, fail, passed
from labkit.serving.autoscaler_config import AnnotationError, RevisionAutoscaling
from labkit.serving.kpa import Autoscaler
from labkit.sim.autoscaling import (
    AutoscalingResult,
    burst_workload,
    simulate_autoscaling,
)

__all__ = [
    "DESIRED_CASES", "P99_TASK", "DesiredCase", "P99Task", "check_desired_pods", "check_p99_settings",
    "desired_table", "expected_desired",
]

# --- Exercise 1: predict the decider's desired pod count ----------------------------------


@dataclass(frozen=True)
class DesiredCase:
    """One decision of a decider that has been running in stable mode until now.

    `stable` and `panic` are the revision-wide window averages of the metric (total
    concurrent requests, or total requests per second), as Knative's collector hands them over.
    """

    what: str
    annotations: Mapping[str, str]
    ready_pods: int
    stable: float
    panic: float
    container_concurrency: int = 0


DESIRED_CASES: dict[str, DesiredCase] = {
    "defaults": DesiredCase("Knative's defaults, one pod, 150 requests in flight", {}, 1, 150.0, 150.0),
    "steady": DesiredCase("target 10, three pods, load grew slowly",
                          {"autoscaling.knative.dev/target": "10"}, 3, 25.0, 25.0),
    "sudden": DesiredCase("target 10, two pods, the last seconds are much busier",
                          {"autoscaling.knative.dev/target": "10"}, 2, 10.0, 30.0),
    "rps": DesiredCase("rps metric, target 50 req/s per pod, four pods",
                       {"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "50"},
                       4, 180.0, 180.0),
    "quiet": DesiredCase("target 10, ten pods, the load has dropped", {"autoscaling.knative.dev/target": "10"},
                         10, 7.0, 7.0),
    "capped": DesiredCase("containerConcurrency 5 with target 10, two pods",
                          {"autoscaling.knative.dev/target": "10"}, 2, 12.0, 12.0, container_concurrency=5),
}


def expected_desired(case: DesiredCase) -> int:
    """The desired pod count Knative's decider computes for the case (one decision)."""
    spec = RevisionAutoscaling.resolve(case.annotations, container_concurrency=case.container_concurrency
                                       ).decider_spec()
    decider = Autoscaler(spec, ready_pods=0, now=0.0)  # created idle: not in panic
    return decider.scale(100.0, case.ready_pods, case.stable, case.panic).desired_pod_count


def desired_table() -> str:
    """The cases as aligned text, for the notebook."""
    rows = [f"{'case':<9} {'ready':>5} {'stable':>7} {'panic':>7} {'CC':>3}  annotations"]
    for name, c in DESIRED_CASES.items():
        anns = ", ".join(f"{k.split('/')[-1]}={v}" for k, v in c.annotations.items()) or "(none)"
        rows.append(f"{name:<9} {c.ready_pods:>5} {c.stable:>7g} {c.panic:>7g} {c.container_concurrency:>3}  {anns}"
                    f"  — {c.what}")
    return "\n".join(rows)


def check_desired_pods(answer: object) -> None:
    """The student's {case name: desired pod count}."""
    if not isinstance(answer, Mapping):
        fail(f"desired pods: expected a dict of case name -> pod count, got {type(answer).__name__}.",
             "build a dict such as {'defaults': 3, ...} with one entry per case in DESIRED_CASES.")
    cleaned = {name: str(int(v)) if isinstance(v, (int, float)) and float(v).is_integer() else repr(v)
               for name, v in answer.items()}
    check_choices(
        "desired pods", cleaned, {name: str(expected_desired(c)) for name, c in DESIRED_CASES.items()},
        hint="per pod the KPA aims at target x utilisation (70 % unless annotated; with containerConcurrency set, "
             "target is at most containerConcurrency). Wanted pods = ceil(average / per-pod target), for the stable "
             "and for the panic average. Panic starts when ceil(panic / per-pod target) / max(1, ready) >= 2; in "
             "panic the larger of the two counts wins. Outside panic a tick can go down to floor(ready / 2), no lower.",
    )


# --- Exercise 2: settings that keep the p99 under a bound for a burst ---------------------


@dataclass(frozen=True)
class P99Task:
    """A revision hit by a burst; find annotations that keep its p99 latency under a bound
    without spending more than a budget of pod-seconds."""

    base_rate: float = 2.0
    burst_rate: float = 100.0
    burst_start: float = 300.0
    burst_seconds: float = 60.0
    duration: float = 600.0
    container_concurrency: int = 10
    service_time: float = 0.2
    cold_start: float = 5.0
    p99_bound: float = 1.0
    pod_seconds_budget: float = 2500.0
    seed: int = 5

    def simulate(self, annotations: Mapping[str, str] | None = None) -> AutoscalingResult:
        """The task's revision with these annotations, in the simulator."""
        workload = burst_workload(self.base_rate, self.burst_rate, self.burst_start, self.burst_seconds,
                                  self.duration, seed=self.seed)
        return simulate_autoscaling(workload, annotations or {}, duration=self.duration, seed=self.seed,
                                    container_concurrency=self.container_concurrency,
                                    service_time=self.service_time, cold_start=self.cold_start)


P99_TASK = P99Task()


def check_p99_settings(annotations: object) -> None:
    """The student's annotations meet the p99 bound within the pod-seconds budget."""
    task = P99_TASK
    if not isinstance(annotations, Mapping):
        fail(f"settings: expected a dict of annotations, got {type(annotations).__name__}.",
             "give a dict such as {'autoscaling.knative.dev/min-scale': '1'} (values are strings, as in YAML).")
    try:
        result = task.simulate(annotations)
    except (AnnotationError, TypeError, ValueError) as exc:
        fail(f"settings: Knative would refuse these annotations: {exc}",
             "each key is autoscaling.knative.dev/<name> and each value a string, e.g. \"3\" or \"60s\".")
    p99, cost = result.latency_percentile(99), result.pod_seconds
    if not p99 <= task.p99_bound:
        fail(f"p99 latency: {p99:.2f} s is above the bound of {task.p99_bound:g} s.",
             "look at which requests are slow (result.queue_delay, result.cold): the burst's first seconds wait "
             "for new pods to start. Settings that make the pods already be there when the burst comes help; "
             "settings that only make the autoscaler react harder do not beat a 5 s cold start.")
    if not cost <= task.pod_seconds_budget:
        fail(f"cost: {cost:,.0f} pod-seconds is above the budget of {task.pod_seconds_budget:,.0f}.",
             "keep the pods you hold in reserve to what the burst needs: compare the burst's concurrency "
             "(rate x service time) with what one pod may hold (containerConcurrency).")
    passed(f"p99 within {task.p99_bound:g} s and cost within {task.pod_seconds_budget:,.0f} pod-seconds")
