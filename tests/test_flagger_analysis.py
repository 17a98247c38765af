"""Flagger's analysis step (labkit.flagger.analysis), tick by tick, against scheduler.go."""

from __future__ import annotations

from typing import Any

import pytest

from labkit.flagger import analysis as fa
from labkit.flagger.analysis import CanaryStatus, HookResult, Readings, Routes, Step, hooks, step
from labkit.flagger.models import Canary

INTERVAL = 60.0


def make(analysis: dict[str, Any], **spec: Any) -> Canary:
    body = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, **analysis},
            **spec,
        },
    }
    canary = Canary.model_validate(body, by_alias=True)
    assert list(canary.problems()) == []
    return canary


class Driver:
    """Runs steps as the live loop does: status and routes carried from one step to the next."""

    def __init__(self, canary: Canary, revision: str = "rev-1") -> None:
        self.canary, self.revision = canary, revision
        self.status, self.routes, self.now = CanaryStatus(), Routes(), 1000.0
        self.metrics: dict[str, Any] = {"request-success-rate": 100.0, "request-duration": 20.0}
        self.webhooks: dict[str, bool | HookResult] = {}
        self.calls: list[tuple[str, str]] = []
        self.not_ready = ""
        self.unavailable_since: float | None = None

    def tick(self) -> Step:
        table = hooks(self.webhooks)

        def webhook(hook: Any, phase: str) -> HookResult:
            self.calls.append((hook.name, phase))
            return table(hook, phase)

        readings = Readings(self.revision, True, self.not_ready, self.unavailable_since,
                            dict(self.metrics), webhook)
        out = step(self.canary, self.status, self.routes, readings, self.now)
        self.status, self.routes = out.status, out.routes
        self.now += INTERVAL
        return out

    def until(self, phase: str, limit: int = 50) -> list[Step]:
        steps = []
        for _ in range(limit):
            steps.append(self.tick())
            if self.status.phase == phase:
                return steps
        raise AssertionError(f"never reached {phase}; at {self.status}")

    def start(self) -> None:
        """Initialise, then change the target so an analysis starts."""
        out = self.tick()
        assert out.status.phase == fa.INITIALIZED
        self.revision = "rev-2"


def messages(steps: list[Step]) -> list[str]:
    return [e.message for s in steps for e in s.events]


def test_initialisation_routes_all_to_primary_and_scales_target_down() -> None:
    d = Driver(make({"stepWeight": 10, "maxWeight": 50}))
    out = d.tick()
    assert out.actions == (fa.INITIALIZE, fa.SCALE_TO_ZERO)
    assert out.routes == Routes(100, 0, False)
    assert out.status.phase == "Initialized"
    assert out.status.last_applied_spec == out.status.last_promoted_spec == "rev-1"
    assert [e.message for e in out.events] == ["Initialization done! podinfo.test"]
    cond = out.status.conditions[0]
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        "Promoted", "True", "Initialized", "Deployment initialization completed.")
    # nothing changes while the target does not
    again = d.tick()
    assert again.status == out.status and again.events == () and again.actions == ()


def test_primary_not_ready_keeps_initializing() -> None:
    canary = make({"stepWeight": 10})
    out = step(canary, CanaryStatus(), Routes(), Readings("r", primary_ready=False), 0.0)
    assert out.status.phase == "Initializing" and out.actions == (fa.INITIALIZE,)
    assert out.events[0].message == "podinfo-primary.test not ready: waiting for rollout to finish"


def test_promotion_step_by_step() -> None:
    d = Driver(make({"stepWeight": 10, "maxWeight": 50}))
    d.start()
    steps = d.until("Succeeded")
    assert messages(steps) == [
        "New revision detected! Scaling up podinfo.test",
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary weight 10",
        "Advance podinfo.test canary weight 20",
        "Advance podinfo.test canary weight 30",
        "Advance podinfo.test canary weight 40",
        "Advance podinfo.test canary weight 50",
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.test",
    ]
    assert [s.status.phase for s in steps] == ["Progressing"] * 6 + ["Promoting", "Finalising", "Succeeded"]
    assert [s.routes.canary for s in steps] == [0, 10, 20, 30, 40, 50, 50, 0, 0]
    assert steps[0].actions == (fa.SCALE_FROM_ZERO,)
    assert steps[6].actions == (fa.PROMOTE,)
    assert steps[-1].actions == (fa.SCALE_TO_ZERO, fa.POST_ROLLOUT)
    assert d.status.last_promoted_spec == "rev-2"
    assert d.status.conditions[0].status == "True"


def test_rollback_when_failed_checks_reach_threshold() -> None:
    d = Driver(make({"stepWeight": 10, "maxWeight": 50, "threshold": 3, "metrics": [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]}))
    d.start()
    d.tick(), d.tick()  # scaling up; pre-rollout and weight 10
    assert d.routes.canary == 10
    d.metrics["request-success-rate"] = 91.5
    steps = d.until("Failed")
    assert messages(steps) == [
        "Halt podinfo.test advancement success rate 91.50% < 99%",
        "Halt podinfo.test advancement success rate 91.50% < 99%",
        "Halt podinfo.test advancement success rate 91.50% < 99%",
        "Rolling back podinfo.test failed checks threshold reached 3",
        "Canary failed! Scaling down podinfo.test",
    ]
    assert [s.status.failed_checks for s in steps] == [1, 2, 3, 0]
    assert d.routes == Routes(100, 0, False)
    assert steps[-1].actions == (fa.SCALE_TO_ZERO, fa.POST_ROLLOUT)
    assert d.status.conditions[0].status == "False"
    # a failed canary stays failed until the target changes again
    assert d.tick().events == ()
    d.revision = "rev-3"
    assert d.tick().events[0].message == "New revision detected! Scaling up podinfo.test"


def test_request_duration_and_no_traffic_messages() -> None:
    d = Driver(make({"stepWeight": 50, "threshold": 2, "metrics": [
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}]}))
    d.start()
    d.tick(), d.tick()
    d.metrics["request-duration"] = 1500.0
    assert d.tick().events[0].message == "Halt podinfo.test advancement request duration 1.5s > 500ms"
    d.metrics["request-duration"] = None
    assert d.tick().events[0].message == (
        "Halt advancement no values found for istio metric request-duration probably "
        "podinfo.test is not receiving traffic")
    assert d.status.failed_checks == 2


def test_ab_iterations_route_matched_traffic_to_canary() -> None:
    d = Driver(make({"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}))
    d.start()
    steps = d.until("Succeeded")
    assert messages(steps) == [
        "New revision detected! Scaling up podinfo.test",
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary iteration 1/3",
        "Advance podinfo.test canary iteration 2/3",
        "Advance podinfo.test canary iteration 3/3",
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.test",
    ]
    assert [s.routes for s in steps[1:4]] == [Routes(0, 100)] * 3
    assert [s.status.iterations for s in steps[1:5]] == [1, 2, 3, 0]


def test_blue_green_with_mirroring() -> None:
    d = Driver(make({"iterations": 2, "mirror": True, "mirrorWeight": 100}))
    d.start()
    steps = d.until("Succeeded")
    assert messages(steps) == [
        "New revision detected! Scaling up podinfo.test",
        "Starting canary analysis for podinfo.test",
        "Advance podinfo.test canary iteration 1/2",
        "Advance podinfo.test canary iteration 2/2",
        "Stop traffic mirroring and route all traffic to canary",
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.test",
    ]
    assert steps[1].routes == Routes(100, 0, True)
    assert steps[3].routes == Routes(0, 100, False)


def test_canary_with_one_mirror_step_first() -> None:
    d = Driver(make({"stepWeight": 50, "maxWeight": 50, "mirror": True}))
    d.start()
    steps = d.until("Succeeded")
    assert [s.routes for s in steps[:4]] == [Routes(), Routes(100, 0, True), Routes(50, 50), Routes(50, 50)]
    assert messages(steps)[2:4] == ["Advance podinfo.test canary weight 0", "Advance podinfo.test canary weight 50"]


def test_step_weights_and_promotion_steps() -> None:
    d = Driver(make({"stepWeights": [1, 5, 25, 80], "stepWeightPromotion": 40}))
    d.start()
    steps = d.until("Succeeded")
    assert [s.routes.canary for s in steps] == [0, 1, 5, 25, 80, 80, 40, 0, 0]
    assert "Advance podinfo.test primary weight 60" in messages(steps)
    assert "Advance podinfo.test primary weight 100" in messages(steps)
    assert [s.status.phase for s in steps][-4:] == ["Promoting", "Promoting", "Finalising", "Succeeded"]


@pytest.mark.parametrize("steps, weight, expected", [
    ([1, 5, 25], 0, 1), ([1, 5, 25], 1, 4), ([1, 5, 25], 5, 20), ([1, 5, 25], 25, 75),
    ([10, 50, 100], 50, 50), ([10, 50, 100], 100, 1), ([], 0, 0),
])
def test_next_step_weight_as_flagger(steps: list[int], weight: int, expected: int) -> None:
    canary = make({"stepWeights": steps} if steps else {"iterations": 1})
    assert fa.next_step_weight(canary, weight) == expected


def test_max_weight() -> None:
    assert fa.max_weight(make({"stepWeight": 5})) == 100
    assert fa.max_weight(make({"stepWeight": 5, "maxWeight": 30})) == 30
    assert fa.max_weight(make({"stepWeights": [10, 60]})) == 60


def test_new_revision_mid_analysis_restarts() -> None:
    d = Driver(make({"stepWeight": 20}))
    d.start()
    d.tick(), d.tick()
    assert d.routes.canary == 20
    d.revision = "rev-3"
    out = d.tick()
    assert [e.message for e in out.events] == ["New revision detected! Restarting analysis for podinfo.test"]
    assert out.routes == Routes(100, 0) and out.status.phase == "Progressing"
    assert (out.status.canary_weight, out.status.failed_checks, out.status.iterations) == (0, 0, 0)
    assert out.status.last_applied_spec == "rev-3"
    assert d.tick().events[0].message == "Starting canary analysis for podinfo.test"


def test_progress_deadline_rolls_back() -> None:
    d = Driver(make({"stepWeight": 20}, progressDeadlineSeconds=120))
    d.start()
    d.tick()
    d.not_ready, d.unavailable_since = "waiting for rollout to finish: 0 of 1 updated replicas are available", d.now
    waiting = d.tick()
    assert waiting.events[0].message == (
        "canary deployment podinfo.test not ready: waiting for rollout to finish: 0 of 1 "
        "updated replicas are available")
    d.tick(), d.tick()
    out = d.tick()  # 180 s after the canary became unavailable
    assert [e.message for e in out.events] == [
        "Rolling back podinfo.test progress deadline exceeded canary deployment podinfo.test not "
        "ready: waiting for rollout to finish: 0 of 1 updated replicas are available",
        "Canary failed! Scaling down podinfo.test",
    ]
    assert out.status.phase == "Failed"


def test_skip_analysis_promotes_at_once() -> None:
    d = Driver(make({"stepWeight": 20}, skipAnalysis=True))
    d.start()
    d.tick()
    out = d.tick()
    assert [e.message for e in out.events] == [
        "Copying podinfo.test template spec to podinfo-primary.test",
        "Promotion completed! Canary analysis was skipped for podinfo.test",
    ]
    assert out.actions == (fa.PROMOTE, fa.SCALE_TO_ZERO)
    assert out.status.phase == "Succeeded" and out.routes == Routes()


def test_webhooks_in_flagger_order_with_phases() -> None:
    d = Driver(make({"stepWeight": 50, "maxWeight": 50, "webhooks": [
        {"name": "gate", "type": "confirm-rollout", "url": "http://g/"},
        {"name": "smoke", "type": "pre-rollout", "url": "http://s/"},
        {"name": "load", "url": "http://l/", "metadata": {"cmd": "hey -z 1m http://x"}},
        {"name": "promo", "type": "confirm-promotion", "url": "http://p/"},
        {"name": "notify", "type": "post-rollout", "url": "http://n/"},
        {"name": "undo", "type": "rollback", "url": "http://u/"},
    ]}))
    d.webhooks = {"gate": False, "undo": False}
    d.start()
    out = d.tick()
    assert out.status.phase == "Waiting"
    assert out.events[0].message == "Halt podinfo.test advancement waiting for approval gate"
    assert d.tick().events == ()  # still waiting: the warning is not repeated
    d.webhooks["gate"] = True
    out = d.tick()
    assert [e.message for e in out.events] == [
        "Confirm-rollout check gate passed", "New revision detected! Scaling up podinfo.test"]
    d.calls.clear()
    d.until("Succeeded")
    # scheduler order: rollback hooks first each tick, pre-rollout once, then the rollout
    # checks, confirm-promotion at the maximum weight; post-rollout is the caller's action
    assert d.calls == [("undo", "Progressing"), ("smoke", "Progressing"),
                       ("undo", "Progressing"), ("load", "Progressing"), ("promo", "Progressing")]


def test_failing_rollout_webhook_and_rollback_webhook() -> None:
    d = Driver(make({"stepWeight": 50, "threshold": 1, "webhooks": [
        {"name": "acceptance", "type": "rollout", "url": "http://a/"}]}))
    d.webhooks = {"acceptance": HookResult(False, "status 503")}
    d.start()
    steps = d.until("Failed")
    assert "Halt podinfo.test advancement external check acceptance failed status 503" in messages(steps)

    d = Driver(make({"stepWeight": 50, "webhooks": [{"name": "undo", "type": "rollback", "url": "http://u/"}]}))
    d.webhooks = {"undo": False}
    d.start()
    d.tick(), d.tick()
    d.webhooks["undo"] = True
    out = d.tick()
    assert [e.message for e in out.events] == [
        "Rollback check undo passed", "Rolling back podinfo.test manual webhook invoked",
        "Canary failed! Scaling down podinfo.test"]
    assert out.status.phase == "Failed" and out.routes == Routes()


def test_confirm_promotion_waits() -> None:
    d = Driver(make({"stepWeight": 50, "maxWeight": 50, "webhooks": [
        {"name": "promo", "type": "confirm-promotion", "url": "http://p/"}]}))
    d.webhooks = {"promo": False}
    d.start()
    d.tick(), d.tick()
    out = d.tick()
    assert out.status.phase == "WaitingPromotion"
    assert out.events[-1].message == "Halt podinfo.test advancement waiting for promotion approval promo"
    assert out.routes.canary == 50  # traffic stays where it was
    d.webhooks["promo"] = True
    steps = d.until("Succeeded")
    assert "Confirm-promotion check promo passed" in messages(steps)


def test_template_metric_errors_are_failed_checks() -> None:
    d = Driver(make({"stepWeight": 50, "metrics": [
        {"name": "accuracy", "templateRef": {"name": "model-accuracy"}, "thresholdRange": {"min": 0.9}}]}))
    d.metrics = {"accuracy": "metric template model-accuracy.test not found"}
    d.start()
    d.tick(), d.tick()
    out = d.tick()
    assert out.events[0].message == "Metric query failed for accuracy: metric template model-accuracy.test not found"
    d.metrics = {"accuracy": 0.85}
    assert d.tick().events[0].message == "Halt podinfo.test advancement accuracy 0.85 < 0.9"
    assert d.status.failed_checks == 2


def test_suspend_does_nothing() -> None:
    canary = make({"stepWeight": 10}, suspend=True)
    out = step(canary, CanaryStatus(), Routes(), Readings("r"), 0.0)
    assert out.status == CanaryStatus() and out.events[0].message == "skipping canary run as object is suspended"


def test_status_round_trips_through_dict() -> None:
    d = Driver(make({"stepWeight": 10}))
    d.start()
    d.tick(), d.tick()
    data = d.status.to_dict()
    assert data["phase"] == "Progressing" and data["canaryWeight"] == 10
    assert data["conditions"][0]["reason"] == "Progressing"
    assert CanaryStatus.from_dict(data) == d.status


def test_go_duration_text() -> None:
    assert [fa.go_duration_text(x) for x in (0, 0.5, 12.5, 500, 1500, 90_000)] == [
        "0s", "500µs", "12.5ms", "500ms", "1.5s", "1m30s"]
