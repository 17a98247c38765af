"""One algorithm, two clocks: the live Knative Service's gradual rollout takes the steps the
revisions simulator (`labkit.sim.revisions`) takes for the same rollout-duration.

Live, two real revisions of httpbin; the second's rollout runs on the wall clock and the
monitor's ticks. Simulated, the same `advance` on a simpy clock. Asserted: the same sequence
of traffic splits (the shares depend only on the duration, as both observe the new revision
ready at the instant its 1 % starts), not when each step lands.
"""

from __future__ import annotations

import yaml

from labkit.cluster import LocalCluster
from labkit.serving.service import configure_serving, knative_service
from labkit.sim.revisions import Deploy, simulate_revisions

DURATION = 4.0  # 3 steps of 1 s: 1 -> 34 -> 67 -> 100


def manifest(version: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "roll"},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
            "spec": {"containers": [{"image": "labkit/httpbin",
                                     "env": [{"name": "VERSION", "value": version}]}]}}}})


def test_live_rollout_takes_the_simulated_steps(cluster: LocalCluster, wait_for) -> None:
    simulated = simulate_revisions([Deploy(0, startup=1), Deploy(10, startup=1)], horizon=60,
                                   rollout_duration=DURATION, name="roll")
    expected = [dict(split) for _, split in simulated.splits if split]

    configure_serving(cluster, rollout_duration=DURATION)
    cluster.apply(manifest("v1"))
    svc = knative_service(cluster, "roll")
    seen = [dict(svc.table.split)]
    cluster.apply(manifest("v2"))

    def record() -> bool:
        split = dict(svc.table.split)  # live lists the latest first: compare shares only
        if split != seen[-1]:
            seen.append(split)
        return svc.rollout is not None and svc.rollout.done and split == expected[-1]

    wait_for(record, 30, "the live rollout to finish")
    assert seen == expected
    assert len(expected) == 5  # v1 alone, then 1, 34, 67, 100 % for v2
