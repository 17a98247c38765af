"""The HPA's status conditions and the missing-CPU-request warning (labkit.serving.hpa_status),
on decisions of the pure HPA sync."""

from __future__ import annotations

from labkit.serving.hpa import DEFAULT_SCALE_UP, Behavior, HPASpec, PodReading, ScalingRules, cpu_readings
from labkit.serving.hpa_status import hpa_conditions, missing_cpu_request
from labkit.serving.hpa_sync import HPAHistory, hpa_sync


def _conditions(*decisions) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in hpa_conditions(decisions)}


def test_no_cpu_request_is_failed_get_resource_metric_in_kubernetes_words():
    readings, _ = cpu_readings([("web-1", True, 1.0)], {}, 0.0, None, container="app")
    decision = hpa_sync(HPASpec(target_utilization=50, max_replicas=5), HPAHistory(), 1, readings, 0.0)
    assert not decision.scaled
    assert _conditions(decision) == {
        "AbleToScale": ("True", "SucceededGetScale", "the HPA controller was able to get the target's current scale"),
        "ScalingActive": ("False", "FailedGetResourceMetric", "the HPA was unable to compute the replica count: "
                          "missing request for cpu in container app of Pod web-1"),
    }


def test_knative_pods_name_the_user_container_by_default():
    readings, _ = cpu_readings([("hello-00001-deployment-1", True, 1.0)], {}, 0.0, None)
    decision = hpa_sync(HPASpec(), HPAHistory(), 1, readings, 0.0)
    assert decision.reason.endswith("in container user-container of Pod hello-00001-deployment-1")


def test_a_rescale_then_a_quiet_sync():
    spec = HPASpec(target_utilization=50, max_replicas=3)
    busy = [PodReading("p0", True, 1000, 500)]  # 200 % of the request: wants 4, max 3
    up = hpa_sync(spec, HPAHistory(), 1, busy, 0.0)
    assert (up.desired, up.reason) == (3, "TooManyReplicas")
    after_up = _conditions(up)
    assert after_up["AbleToScale"] == ("True", "SucceededRescale",
                                       "the HPA controller was able to update the target scale to 3")
    assert after_up["ScalingActive"][:2] == ("True", "ValidMetricFound")
    assert after_up["ScalingLimited"] == ("True", "TooManyReplicas",
                                          "the desired replica count is more than the maximum replica count")
    # 50 %: within tolerance, but the 5-minute window still holds the first sync's 4 (over max 3).
    calm = [PodReading(f"p{i}", True, 250, 500) for i in range(3)]
    steady = hpa_sync(spec, up.history, 3, calm, 15.0)
    after = _conditions(up, steady)
    assert (steady.proposal, steady.stabilized, steady.desired) == (3, 4, 3)
    assert after["AbleToScale"] == ("True", "ScaleDownStabilized", "recent recommendations were higher than "
                                    "current one, applying the highest recent recommendation")
    assert after["ScalingLimited"][:2] == ("True", "TooManyReplicas")
    assert [c.type for c in hpa_conditions([up, steady])] == ["AbleToScale", "ScalingActive", "ScalingLimited"]
    later = hpa_sync(spec, steady.history, 3, calm, 400.0)  # the window has passed
    assert _conditions(up, steady, later)["AbleToScale"] == (
        "True", "ReadyForNewScale", "recommended size matches current size")
    assert _conditions(up, steady, later)["ScalingLimited"] == (
        "False", "DesiredWithinRange", "the desired count is within the acceptable range")


def test_a_scale_up_window_is_scale_up_stabilized():
    spec = HPASpec(target_utilization=50, max_replicas=10,
                   behavior=Behavior(scale_up=ScalingRules(60, DEFAULT_SCALE_UP.policies)))
    quiet = hpa_sync(spec, HPAHistory(), 2, [PodReading(f"p{i}", True, 250, 500) for i in range(2)], 0.0)
    busy = hpa_sync(spec, quiet.history, 2, [PodReading(f"p{i}", True, 1000, 500) for i in range(2)], 15.0)
    assert (busy.proposal, busy.stabilized, busy.scaled) == (8, 2, False)
    assert _conditions(quiet, busy)["AbleToScale"] == (
        "True", "ScaleUpStabilized",
        "recent recommendations were lower than current one, applying the lowest recent recommendation")


def test_a_failing_sync_keeps_the_last_scaling_limited():
    # setCondition: a sync that cannot compute a count leaves ScalingLimited as it was.
    spec = HPASpec(target_utilization=50, max_replicas=3)
    up = hpa_sync(spec, HPAHistory(), 1, [PodReading("p0", True, 1000, 500)], 0.0)
    blind = hpa_sync(spec, up.history, 3, [PodReading(f"p{i}", False, None, 500) for i in range(3)], 15.0)
    after = _conditions(up, blind)
    assert after["ScalingActive"][:2] == ("False", "FailedGetResourceMetric")
    assert after["ScalingLimited"][1] == "TooManyReplicas"


def test_a_target_at_zero_is_scaling_disabled():
    decision = hpa_sync(HPASpec(), HPAHistory(), 0, [], 0.0)
    assert _conditions(decision)["ScalingActive"] == (
        "False", "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")


def test_no_sync_yet_no_conditions():
    assert hpa_conditions([]) == []


def test_the_warning_only_without_a_request():
    assert missing_cpu_request("HorizontalPodAutoscaler default/web", "Deployment web", "app", 200) is None
    warning = missing_cpu_request("HorizontalPodAutoscaler default/web", "Deployment web", "app", None)
    assert warning is not None
    assert warning.startswith("HorizontalPodAutoscaler default/web: container 'app' of Deployment web has no "
                              "resources.requests.cpu")
    assert "missing request for cpu in container app" in warning
