"""The live HPA: the HPA class makes the simulator's decisions and scales up on real CPU; the
autoscaling/v2 HorizontalPodAutoscaler kind scales a Deployment."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import yaml

from labkit.core.hpa_controller import configure_hpa, horizontal_pod_autoscaler
from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.serving.autoscaler_loop import AutoscalerLoop
from labkit.serving.hpa_sync import HPADecision
from labkit.serving.models import RevisionTemplate
from labkit.serving.revision import LiveRevision, ServingPod
from labkit.serving.service import configure_serving, knative_service
from labkit.sim.autoscaling import burst_workload, simulate_autoscaling

HPA = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}


# --- live: the same decisions as the simulator, then real CPU ---------------------------------

class SteppedClock:
    """A clock the test moves: timers run in (time, arming order), as simpy runs events."""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[tuple[float, int, list]] = []
        self._armed = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback):
        entry = [callback]
        with self._lock:
            self._armed += 1
            self._timers.append((self._now + delay, self._armed, entry))
            self._timers.sort(key=lambda t: t[:2])
        return _Timer(entry)

    def next_time(self) -> float | None:
        with self._lock:
            return self._timers[0][0] if self._timers else None

    def advance(self, to: float) -> None:
        self._now = to
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > self._now:
                    return
                _, _, entry = self._timers.pop(0)
            if entry[0] is not None:
                entry[0]()


class _Timer:
    def __init__(self, entry: list) -> None:
        self._entry = entry

    def cancel(self) -> None:
        self._entry[0] = None


AGREE_ANNOTATIONS = {**HPA, "autoscaling.knative.dev/target": "50", "autoscaling.knative.dev/window": "30s"}
AGREE_HORIZON = 150.0


def test_live_loop_makes_the_simulated_decisions(cluster, wait_for):
    # The simulator runs a seeded burst (0 s cold starts); the live AutoscalerLoop, scaling a
    # LiveRevision of real processes on a clock the test steps, reads each pod's CPU counter
    # from the simulation (pod N = the N-th started, in both) instead of the OS. Asserted:
    # the same HPA sync at the same times, with the same replicas, utilisation and decision.
    workload = burst_workload(0.5, 10.0, 20.0, 40.0, AGREE_HORIZON, seed=5)
    sim = simulate_autoscaling(workload, AGREE_ANNOTATIONS, duration=AGREE_HORIZON, seed=1,
                               service_time=0.25, pod_parallelism=1, cold_start=0.0, cpu_request=0.5)
    desired = [d.desired for d in sim.hpa_decisions]
    assert max(desired) >= 3 and desired[-1] < max(desired)  # up, and down again (30 s window)

    clock = SteppedClock()
    counters = dict(zip([d.time for d in sim.hpa_decisions], sim.hpa_cpu_seconds))

    def cpu_seconds(pod: ServingPod) -> float | None:
        return counters[clock.now()].get("pod-" + pod.name.rsplit("-", 1)[1])

    settings = RevisionAutoscaling.resolve(AGREE_ANNOTATIONS)
    template = RevisionTemplate.model_validate({
        "metadata": {"annotations": AGREE_ANNOTATIONS},
        "spec": {"containers": [{"image": "labkit/hello", "resources": {"requests": {"cpu": "500m"}}}]}})
    box: list[AutoscalerLoop] = []

    def on_change() -> None:
        if box:
            box[0].pods_changed()

    revision = LiveRevision(cluster.loop, service="agree", namespace="default", name="agree-00001",
                            generation=1, template=template, settings=settings, start_timeout=20.0,
                            on_change=on_change)
    try:
        def pods_up() -> bool:
            return revision.ready_count == revision.replica_count and revision.failure is None

        revision.scale_to(settings.initial_scale)
        wait_for(pods_up, 30.0, "the first pod")
        loop = AutoscalerLoop(revision, clock, lambda now: None, cpu_seconds=cpu_seconds)
        box.append(loop)
        loop.start()
        while (t := clock.next_time()) is not None and t <= AGREE_HORIZON:
            clock.advance(t)
            wait_for(pods_up, 30.0, f"the pods wanted at t={t:g}")  # time stands still meanwhile
        loop.stop()
    finally:
        revision.close()

    def key(d: HPADecision) -> tuple:
        return (d.time, d.current, d.desired, d.proposal, d.utilization, d.reason)

    assert [key(d) for d in loop.hpa_decisions] == [key(d) for d in sim.hpa_decisions]


def test_live_hpa_class_scales_up_under_cpu_load(cluster, wait_for):
    # Two clients keep the single-threaded replica burning CPU (up to a core against a 200m
    # request, target 50 %: a ratio far above 1 even on a busy machine): the first sync with
    # a metric asks for more pods, at most max-scale 2.
    configure_serving(cluster, hpa_sync_seconds=2.0)
    cluster.apply(yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "cpu"},
        "spec": {"template": {
            "metadata": {"annotations": {**HPA, "autoscaling.knative.dev/target": "50",
                                         "autoscaling.knative.dev/max-scale": "2"}},
            "spec": {"containers": [{"image": "labkit/httpbin",
                                     "resources": {"requests": {"cpu": "200m"}}}]}}}}))
    svc = knative_service(cluster, "cpu")
    revision = svc.revision()
    loop = svc.autoscalers[revision.name]
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(svc.url + "/burn?ms=100", timeout=30) as response:
                response.read()

    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(burn)
        try:
            wait_for(lambda: revision.replica_count >= 2, 60, "the HPA to add a replica")
        finally:
            stop.set()
    scaled = next(d for d in loop.hpa_decisions if d.scaled)
    assert scaled.utilization is not None and scaled.utilization > 50 * 1.1
    assert (scaled.current, scaled.desired) == (1, 2) and scaled.proposal is not None and scaled.proposal > 2  # capped by max-scale
    assert revision.mode == "Serve" and not revision.in_panic
    assert all(d.desired >= 1 for d in loop.hpa_decisions)


DEPLOYMENT_AND_HPA = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: burner}
spec:
  replicas: 1
  selector: {matchLabels: {app: burner}}
  template:
    metadata: {labels: {app: burner}}
    spec:
      containers:
      - name: app
        image: labkit/httpbin
        resources: {requests: {cpu: 200m}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burner}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burner}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
"""


def test_hpa_kind_scales_a_deployment_on_cpu(cluster, wait_for):
    # The same load as above, straight at the Deployment's pod: the HPA writes replicas 2.
    configure_hpa(cluster, sync_seconds=2.0)
    cluster.apply(DEPLOYMENT_AND_HPA)
    pod_url = cluster.get("Deployment", "burner").status.urls[0]
    hpa = horizontal_pod_autoscaler(cluster, "burner")
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(pod_url + "/burn?ms=100", timeout=30) as response:
                response.read()

    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(burn)
        try:
            wait_for(lambda: cluster.get("Deployment", "burner").status.detail["readyReplicas"] == 2,
                     60, "the HPA to scale the Deployment to 2")
        finally:
            stop.set()
    scaled = next(d for d in hpa.decisions if d.scaled)
    assert (scaled.current, scaled.desired) == (1, 2)
    assert scaled.utilization is not None and scaled.utilization > 55
    assert cluster.get("Deployment", "burner").object.spec.replicas == 2
    status = cluster.get("HorizontalPodAutoscaler", "burner").status
    assert status.detail["desiredReplicas"] == 2 and "/50%" in status.message
