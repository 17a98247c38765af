"""Kubernetes' HorizontalPodAutoscaler in labkit: the pure algorithm and the simulator
(the live HPA class: tests/test_hpa_live.py).

Worked examples from kubernetes.io "Horizontal Pod Autoscaling" (algorithm details,
configurable scaling behavior) and kubernetes/kubernetes
``pkg/controller/podautoscaler/replica_calculator.go`` / ``horizontal.go``.
"""

from __future__ import annotations

import pytest

from labkit import manifests
from labkit.core.hpa_models import HorizontalPodAutoscaler
from labkit.core.resources import cpu_millis
from labkit.manifests import ManifestError
from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.serving.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    MAX_REPLICAS_UNBOUNDED,
    Behavior,
    HPASpec,
    PodReading,
    ScalingPolicy,
    ScalingRules,
    cpu_readings,
    knative_hpa_spec,
    resource_replicas,
)
from labkit.serving.hpa_sync import HPADecision, HPAHistory, hpa_sync
from labkit.serving.models import KnativeService
from labkit.sim.autoscaling import burst_workload, simulate_autoscaling
from labkit.sim.workloads import TraceReplay

HPA = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}


def pods(n: int, usage: int | None, request: int = 1000, ready: bool = True, prefix: str = "p") -> list[PodReading]:
    return [PodReading(f"{prefix}{i}", ready, usage, request) for i in range(n)]


def run(spec: HPASpec, current: int, usage_per_sync: list[int], period: float = 15.0,
        request: int = 1000) -> list[HPADecision]:
    """Syncs every `period` s from t = 0; each sync every pod uses the next `usage_per_sync`."""
    history, out = HPAHistory(), []
    for i, usage in enumerate(usage_per_sync):
        decision = hpa_sync(spec, history, current, pods(current, usage, request), i * period)
        history, current = decision.history, decision.desired
        out.append(decision)
    return out


# --- the replica calculator ---------------------------------------------------------------

@pytest.mark.parametrize("n,usage,target,want", [
    (2, 200, 100, 4),   # "current 200m, desired 100m: the number of replicas will be doubled"
    (4, 50, 100, 2),    # "current 50m: you'll halve the number of replicas"
    (4, 105, 100, 4),   # ratio 1.05: within the 10 % tolerance, unchanged
    (4, 110, 100, 5),   # ratio 1.10: 1 - 1.1 is -0.10000000000000009 in float64, as in Go: outside
    (4, 111, 100, 5),   # ratio 1.11: ceil(4 * 1.11)
    (4, 0, 50, 0),      # idle: the calculator says 0 (minReplicas comes later)
    (4, 160, 80, 8),    # twice the target: twice the pods
    (4, 85, 80, 4),     # 1.0625: within tolerance
    (4, 100, 80, 5),    # ceil(4 x 1.25)
    (4, 20, 80, 1),     # ceil(4 x 0.25)
])
def test_ratio_and_tolerance(n, usage, target, want):
    # Each pod requests 100m, so usage in millicores is utilisation in percent.
    assert resource_replicas(pods(n, usage, request=100), target, n).replicas == want


def test_utilization_is_an_integer_percentage():
    # 149m of 1000m is 14 %, not 14.9 % (Go's integer division in GetResourceUtilizationRatio):
    # against a 10 % target, 10 pods want ceil(1.4 x 10) = 14, not ceil(14.9) = 15.
    answer = resource_replicas(pods(10, 149), 10, 10)
    assert (answer.utilization, answer.replicas) == (14, 14)
    assert resource_replicas(pods(1, 100, request=300), 30, 1).utilization == 33


def test_missing_metrics_hold_back_a_scale_down():
    # 4 replicas, target 50 %: three pods at 40m of 100m, one without a metric yet. Without it:
    # ceil(0.8 * 3) = 3; with it counted as 100 % on a scale-down: 220 / 400 = 55 % -> 1.1,
    # within tolerance: stay at 4.
    three = pods(3, 40, request=100)
    assert resource_replicas(three, 50, 3).replicas == 3
    answer = resource_replicas(three + [PodReading("new", True, None, 100)], 50, 4)
    assert (answer.replicas, answer.pods["new"]) == (4, "missing")


def test_unready_pods_count_as_idle_on_a_scale_up():
    # Two ready pods at 100 % (target 50) want 4; two more still starting count as 0 %:
    # 200 / 400 = 50 % -> ratio 1: no further scale-up while they start.
    answer = resource_replicas(pods(2, 1000) + pods(2, None, ready=False, prefix="s"), 50, 4)
    assert answer.replicas == 4 and answer.pods["s0"] == "unready"
    # Without unready pods the same two ask for ceil(2 * 2) = 4.
    assert resource_replicas(pods(2, 1000), 50, 2).replicas == 4


def test_no_request_or_no_metric_means_no_count():
    assert "missing request for cpu" in resource_replicas(pods(2, 500, request=0), 50, 2).reason
    assert resource_replicas(pods(2, None, ready=False), 50, 2).replicas is None
    assert resource_replicas([], 50, 2).reason.startswith("no pods")


# --- stabilisation and policies (spec.behavior) ---------------------------------------------

def test_docs_scale_down_policies_example():
    # kubernetes.io: policies Pods 4 / 60 s and Percent 10 / 60 s (selectPolicy Max). From 80
    # replicas towards 10: "during the first step 8 replicas will be reduced. In the next
    # iteration when the number of replicas is 72, 10% of the pods is 7.2 but the number is
    # rounded up to 8 ... When the number of replicas falls below 40 the first policy (Pods)
    # is applied and 4 replicas will be reduced at a time." Each step waits for its period.
    down = ScalingRules(0, (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)))
    spec = HPASpec(target_utilization=50, max_replicas=100, behavior=Behavior(scale_down=down))
    decisions = run(spec, 80, [5] * 29)  # 0.5 % of request: the calculator asks for very few
    changes = [(d.time, d.current, d.desired) for d in decisions if d.scaled]
    assert changes[:3] == [(0, 80, 72), (60, 72, 64), (120, 64, 57)]
    below_40 = [(a, b) for _, a, b in changes if a <= 40]
    assert below_40 and all(a - b == 4 for a, b in below_40)
    assert all(d.reason == "ScaleDownLimit" for d in decisions)


def test_default_scale_down_waits_for_the_stabilization_window():
    spec = HPASpec(target_utilization=50, behavior=Behavior())
    # 10 pods busy at the target for a minute (5 syncs), then idle.
    decisions = run(spec, 10, [500] * 5 + [0] * 30)
    last_high = decisions[4].time  # 60 s
    first_down = next(d for d in decisions if d.scaled)
    # Highest proposal of the last 300 s (strictly younger) holds: the first sync whose window
    # no longer holds the t=60 proposal is t=360; the 100 % / 15 s policy then allows all.
    assert first_down.time == last_high + 300 == 360
    assert (first_down.current, first_down.desired) == (10, 1)
    assert all(d.reason == "ScaleDownStabilized" for d in decisions[5:24])


def test_default_scale_up_policies_double_or_add_four_per_period():
    spec = HPASpec(target_utilization=10, behavior=Behavior())
    decisions = run(spec, 1, [1000] * 5)  # every pod at 10x the target
    # 1 -> max(1 + 4, 2 x 1) = 5 -> max(9, 10) = 10 -> 20 -> 40 -> 80 (proposals are 10x).
    assert [d.desired for d in decisions] == [5, 10, 20, 40, 80]
    assert decisions[0].proposal == 10 and decisions[0].reason == "ScaleUpLimit"


def test_events_within_a_period_count_against_the_next_scale_up():
    # Syncs 5 s apart, policy periods 15 s: the change made at t=0 still counts at 5 and 10.
    spec = HPASpec(target_utilization=10, behavior=Behavior())
    decisions = run(spec, 1, [1000] * 4, period=5.0)
    assert [d.desired for d in decisions] == [5, 5, 5, 10]


def test_select_policy_min_and_disabled():
    up_min = ScalingRules(0, DEFAULT_SCALE_UP.policies, "Min")
    spec = HPASpec(target_utilization=10, behavior=Behavior(scale_up=up_min))
    assert [d.desired for d in run(spec, 2, [1000] * 2)] == [4, 8]  # min(2 + 4, 2 x 2)
    no_down = ScalingRules(0, DEFAULT_SCALE_DOWN.policies, "Disabled")
    spec = HPASpec(target_utilization=50, behavior=Behavior(scale_down=no_down))
    assert all(d.desired == 6 for d in run(spec, 6, [0] * 10))


def test_scale_up_stabilization_window_takes_the_lowest_recent_proposal():
    up = ScalingRules(30, DEFAULT_SCALE_UP.policies)
    spec = HPASpec(target_utilization=50, behavior=Behavior(scale_up=up))
    # 2 pods at the target (proposal 2) for two syncs, then at twice it (proposal 4): held at
    # the lowest proposal strictly younger than 30 s, so the t=15 one holds at t=30, not at 45.
    decisions = run(spec, 2, [500, 500, 1000, 1000, 1000])
    assert [d.desired for d in decisions] == [2, 2, 2, 4, 4]
    assert [d.proposal for d in decisions] == [2, 2, 4, 4, 8]
    assert decisions[2].reason == "ScaleUpStabilized"


def test_without_behavior_the_legacy_path():
    spec = HPASpec(target_utilization=10)  # no spec.behavior, as Knative creates it by default
    # Scale-up capped at max(2 x current, 4) per sync; scale-down after 5 minutes.
    decisions = run(spec, 1, [1000] * 3 + [0] * 25)
    assert [d.desired for d in decisions[:3]] == [4, 8, 16]
    # Idle from t=45, yet the highest proposal of the window (80, at t=30) still stands: the
    # HPA keeps climbing to it, at most doubling per sync.
    assert [(d.proposal, d.desired) for d in decisions[3:6]] == [(0, 32), (0, 64), (0, 80)]
    first_down = next(d for d in decisions if d.desired < d.current)
    assert first_down.time == 30 + 300 + 15  # the t=30 proposal counts while not older than 300 s


def test_bounds_and_disabled_target():
    spec = HPASpec(target_utilization=50, min_replicas=2, max_replicas=5)
    assert hpa_sync(spec, HPAHistory(), 8, pods(8, 500), 0).desired == 5
    assert hpa_sync(spec, HPAHistory(), 1, pods(1, 500), 0).desired == 2
    assert hpa_sync(spec, HPAHistory(), 0, [], 0).reason == "ScalingDisabled"
    stuck = hpa_sync(spec, HPAHistory(), 3, pods(3, 500, request=0), 0)
    assert (stuck.desired, stuck.scaled) == (3, False) and "missing request" in stuck.reason


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="at least one Policy"):
        ScalingRules(0, ())
    with pytest.raises(ValueError, match="stabilizationWindowSeconds"):
        ScalingRules(3601, DEFAULT_SCALE_UP.policies)
    with pytest.raises(ValueError, match="periodSeconds"):
        ScalingPolicy("Pods", 1, 0)


# --- Knative's HPA class ---------------------------------------------------------------------

def test_knative_makes_the_hpa_from_the_annotations():
    anns = {**HPA, "autoscaling.knative.dev/target": "62.5", "autoscaling.knative.dev/max-scale": "7"}
    spec = knative_hpa_spec(RevisionAutoscaling.resolve(anns), anns)
    assert (spec.target_utilization, spec.min_replicas, spec.max_replicas, spec.behavior) == (63, 1, 7, None)
    anns = {**HPA, "autoscaling.knative.dev/window": "2m"}
    spec = knative_hpa_spec(RevisionAutoscaling.resolve(anns), anns)
    assert spec.behavior is not None and spec.max_replicas == MAX_REPLICAS_UNBOUNDED
    assert spec.behavior.scale_up.stabilization_window_seconds == 120
    assert spec.behavior.scale_down == ScalingRules(120, DEFAULT_SCALE_DOWN.policies)


def test_cpu_readings_need_two_samples():
    first, marks = cpu_readings([("a", True, 10.0), ("b", False, None)], {}, 15.0, 500)
    assert [r.usage_millis for r in first] == [None, None] and set(marks) == {"a"}
    second, _ = cpu_readings([("a", True, 13.0), ("b", True, 1.0)], marks, 30.0, 500)
    assert [(r.name, r.usage_millis) for r in second] == [("a", 200), ("b", None)]


def test_requests_cpu_is_kept_and_limits_are_ignored():
    text = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - image: labkit/httpbin
          resources: {requests: {cpu: 250m}, limits: {cpu: "1"}}
"""
    warnings: list = []
    service, = manifests.load(manifests._YamlText(text), warnings=warnings)
    assert isinstance(service, KnativeService)
    resources = service.spec.template.spec.containers[0].resources
    assert resources is not None and resources.cpu_request_millis() == 250
    assert [w.path for w in warnings] == ["spec.template.spec.containers[0].resources.limits"]
    with pytest.raises(ManifestError, match=r":10: Service/web: spec\.template\.spec\.containers\[0\]"
                                            r"\.resources\.requests\.cpu: quantities must match"):
        manifests.load_text(text.replace("250m", "lots"))
    assert [cpu_millis(v) for v in ("250m", 1, 0.5, "1.5", "2e-3")] == [250, 1000, 500, 1500, 2]


# --- the simulator -----------------------------------------------------------------------------

def burst() -> TraceReplay:
    return burst_workload(1.0, 12.0, 60.0, 120.0, 600.0, seed=3)


def simulate(annotations: dict[str, str], **kw):
    return simulate_autoscaling(burst(), annotations, duration=600.0, seed=2, service_time=0.25,
                                pod_parallelism=1, cold_start=0.0, **kw)


def test_simulated_hpa_scales_up_on_cpu_and_never_to_zero():
    result = simulate({**HPA, "autoscaling.knative.dev/target": "50"}, cpu_request=0.5)
    decisions = result.hpa_decisions
    assert [d.time for d in decisions[:3]] == [15.0, 30.0, 45.0]
    assert result.spec is None and result.ticks["time"].size == 0
    assert max(d.desired for d in decisions) >= 4  # 12 req/s x 0.25 s = 3 cores, 50 % of 0.5
    assert result.timeline["ready"].min() >= 1 and result.timeline["replicas"][-1] >= 1
    # The 5-minute window: pods stay until 300 s after the burst's last high proposal.
    peak_end = max(d.time for d in decisions if d.proposal and d.proposal >= 4)
    assert all(d.desired >= 4 for d in decisions if peak_end <= d.time < peak_end + 300)
    # The same seed, the same decisions.
    again = simulate({**HPA, "autoscaling.knative.dev/target": "50"}, cpu_request=0.5)
    assert [(d.time, d.desired, d.utilization) for d in again.hpa_decisions] == \
        [(d.time, d.desired, d.utilization) for d in decisions]


def test_simulator_refuses_bad_hpa_input():
    with pytest.raises(ValueError, match="cpu_request"):
        simulate(HPA, cpu_request=0)
    with pytest.raises(ValueError, match="cpu only"):
        simulate({**HPA, "autoscaling.knative.dev/metric": "memory"})


# --- the autoscaling/v2 HorizontalPodAutoscaler kind -----------------------------------------

HPA_MANIFEST = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown:
      policies: [{type: Pods, value: 1, periodSeconds: 30}]
"""


def test_hpa_kind_defaults_as_the_api_server():
    hpa, = manifests.load_text(HPA_MANIFEST)
    assert isinstance(hpa, HorizontalPodAutoscaler)
    spec = hpa.to_spec()
    assert (spec.target_utilization, spec.min_replicas, spec.max_replicas) == (50, 1, 5)
    # A direction left out takes the default rules; a field left out, the default's field.
    assert spec.behavior is not None
    assert spec.behavior.scale_up == DEFAULT_SCALE_UP
    assert spec.behavior.scale_down == ScalingRules(300, (ScalingPolicy("Pods", 1, 30),), "Max")
    bare, = manifests.load_text(HPA_MANIFEST.split("  metrics:")[0])
    assert isinstance(bare, HorizontalPodAutoscaler)
    assert (bare.to_spec().target_utilization, bare.to_spec().behavior) == (80, None)  # cpu 80 %, legacy path


@pytest.mark.parametrize("change,where,why", [
    (("maxReplicas: 5", "maxReplicas: 0"), ":7: HorizontalPodAutoscaler/web: spec.maxReplicas",
     "must be greater than or equal to `minReplicas`"),
    (("name: cpu", "name: memory"), ":10: HorizontalPodAutoscaler/web: spec.metrics[0].resource.name",
     "labkit measures cpu only"),
    (("kind: Deployment", "kind: StatefulSet"), ":6: HorizontalPodAutoscaler/web: spec.scaleTargetRef",
     "labkit scales an apps/v1 Deployment"),
    (("value: 1,", "value: 0,"), ":13: HorizontalPodAutoscaler/web: spec.behavior.scaleDown.policies[0].value",
     "must be greater than zero"),
    (("type: Resource", "type: External"), ":9: HorizontalPodAutoscaler/web: spec.metrics[0].type",
     "no metrics API"),
    (("policies: [{", "stabilizationWindowSeconds: 4000\n      policies: [{"),
     ":13: HorizontalPodAutoscaler/web: spec.behavior.scaleDown.stabilizationWindowSeconds",
     "less than or equal to 3600"),
])
def test_hpa_kind_bad_input_is_named(change, where, why):
    with pytest.raises(ManifestError) as caught:
        manifests.load_text(HPA_MANIFEST.replace(*change))
    assert where in str(caught.value) and why in str(caught.value), str(caught.value)
