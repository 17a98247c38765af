"""The live Knative Serving and the simulator tell the same story for the same short scenario.

Scenario: a Knative Service running httpbin, ``target: "1"`` (0.7 concurrent requests per pod
at 70 % utilisation) and the shortest stable window (6 s), a 2 s scale-to-zero grace period;
8 clients call ``/delay/1`` back to back for 12 s, then nothing. Knative's formula wants
ceil(8 / 0.7) = 12 pods. Live, real processes start and stop; simulated, the same annotations
drive the same KPA code on a simulated clock. Asserted: the direction and the rough size of
the scaling (both panic, both reach about a dozen pods, both go back to zero), not exact counts
or times.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from labkit.load import run as load
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving, knative_service
from labkit.sim.autoscaling import clients_workload, simulate_autoscaling

ANNOTATIONS = {"autoscaling.knative.dev/target": "1", "autoscaling.knative.dev/window": "6s"}
CONFIG = AutoscalerConfig(scale_to_zero_grace_period=2.0)
CLIENTS, DELAY, LOAD_SECONDS = 8, 1.0, 12.0
WANTED = math.ceil(CLIENTS / 0.7)  # 12 pods

SERVICE = f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: delay
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: "{ANNOTATIONS['autoscaling.knative.dev/target']}"
        autoscaling.knative.dev/window: "{ANNOTATIONS['autoscaling.knative.dev/window']}"
    spec:
      containers:
        - image: labkit/httpbin
"""


def test_live_and_simulated_revisions_scale_alike(cluster, wait_for):
    configure_serving(cluster, autoscaler=CONFIG)
    cluster.apply(SERVICE)
    service = knative_service(cluster, "delay")
    revision = service.revision()
    started = revision.history()[-1].t if revision.history() else 0.0
    measured = load(f"{service.url}/delay/{DELAY:g}", duration=LOAD_SECONDS, concurrency=CLIENTS, timeout=30.0)
    assert measured.count(200) == measured.requests > 0
    wait_for(lambda: revision.replica_count == 0 and revision.ready_count == 0, timeout=60.0,
             what="the live revision to scale to zero")
    live = revision.history()
    live_peak = max(s.ready for s in live)
    live_panicked = any(s.panic for s in live)
    starts = [c.seconds for c in service.cold_starts() if c.seconds is not None]

    sim = simulate_autoscaling(
        clients_workload(CLIENTS, DELAY, max(started, 0.5), LOAD_SECONDS, 60.0), ANNOTATIONS, config=CONFIG,
        duration=60.0, seed=1, service_time=DELAY, service_distribution="deterministic",
        cold_start=statistics.median(starts), cold_start_distribution="deterministic",
    )
    sim_peak = sim.max_ready_pods

    # Up: both panic and reach about the dozen pods Knative's formula asks for.
    assert live_panicked and sim.panic_periods
    for peak in (live_peak, sim_peak):
        assert WANTED * 0.6 <= peak <= WANTED * 1.6, (live_peak, sim_peak)
    assert 0.6 <= live_peak / sim_peak <= 1.6, (live_peak, sim_peak)
    # Down: both went back to zero pods after the load stopped (live: waited for above).
    ready = sim.timeline["ready"]
    assert ready[-1] == 0
    assert np.argmax(ready) < np.flatnonzero(ready == 0).max()
