"""Benchmark: one burst under Knative's KPA and under the HPA class, in simulation.

The seed question (issue 13, Q5/Q7): what does scaling on request concurrency (the KPA) give
that scaling on CPU (Kubernetes' HPA, ``hpa.autoscaling.knative.dev``) does not, and at what
price? One seeded burst hits a quiet revision: no traffic for three minutes (long enough
for the KPA to scale to zero), then 30 req/s for two minutes, then none again, for 15
minutes; every row starts with one ready pod. The app is CPU-bound and single-threaded (one
request at a time per pod, 0.1 s of CPU each, exponential), ``resources.requests.cpu: 1``,
and a new pod takes 2 s to start (lognormal). The same requests go through every row.

Rows: the KPA with ``containerConcurrency: 1`` (Knative's advice for a single-threaded app;
target 0.7 in flight per pod), the KPA with a soft ``target: "1"``, the HPA class at 70 %
CPU as Knative creates it (no ``behavior``: Kubernetes' older path, a 5-minute scale-down
window), and the HPA class with ``window: "60s"`` (Knative turns it into both stabilisation
windows; the default scaling policies apply). Both autoscalers run labkit's policy code, the
very code the live classes run: `labkit.serving.kpa` and `labkit.serving.hpa_sync`.

Measured per row: reaction (seconds from the burst's start to the first extra ready pod),
the peak and when it was reached, latency p50/p99 of requests that arrived during the burst
and of all, requests rejected or timed out, pod-seconds, the fewest ready pods (0: scaled to
zero), the time from the burst's end until at most one pod is left, and the ready pods every
30 s.
Results go to bench/results/hpa_vs_kpa.json.

    python bench/bench_hpa_vs_kpa.py          # a few seconds
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from labkit.sim.autoscaling import AutoscalingResult, burst_workload, simulate_autoscaling

RESULTS = Path(__file__).resolve().parent / "results" / "hpa_vs_kpa.json"
BASE, BURST, BURST_START, BURST_SECONDS, HORIZON = 0.0, 30.0, 180.0, 120.0, 900.0
APP = {"service_time": 0.1, "pod_parallelism": 1, "cold_start": 2.0, "cpu_request": 1.0,
       "cpu_per_request": 1.0}
HPA = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
       "autoscaling.knative.dev/target": "70"}
ROWS: dict[str, tuple[dict[str, str], int]] = {
    "KPA, containerConcurrency 1": ({}, 1),
    "KPA, target 1": ({"autoscaling.knative.dev/target": "1"}, 0),
    "HPA, CPU 70 %": (HPA, 0),
    "HPA, CPU 70 %, window 60s": ({**HPA, "autoscaling.knative.dev/window": "60s"}, 0),
}


def measure(result: AutoscalingResult) -> dict[str, object]:
    """The row's numbers from one simulated run."""
    time, ready = result.timeline["time"], result.timeline["ready"]
    before = int(ready[time <= BURST_START][-1])
    after_start = time > BURST_START
    grew = np.flatnonzero(after_start & (ready > before))
    peak = int(ready.max())
    burst_end = BURST_START + BURST_SECONDS
    back = np.flatnonzero((time > burst_end) & (ready <= 1))
    in_burst = (result.arrival >= BURST_START) & (result.arrival < burst_end)
    burst_latency = result.latency[in_burst]
    return {
        "reaction_seconds": float(time[grew[0]] - BURST_START) if grew.size else None,
        "peak_ready_pods": peak,
        "peak_at_seconds": float(time[int(np.argmax(ready))]),
        "burst_latency_p50": float(np.percentile(burst_latency, 50)),
        "burst_latency_p99": float(np.percentile(burst_latency, 99)),
        "latency_p99": result.latency_percentile(99),
        "rejected": result.rejected + result.timed_out,
        "pod_seconds": result.pod_seconds,
        "min_ready_pods": int(ready.min()),
        "down_to_one_pod_after_burst_seconds": float(time[back[0]] - burst_end) if back.size else None,
        "ready_pods_every_30s": [int(r) for r in ready[(time % 30 == 0)]],
        "hpa_syncs": len(result.hpa_decisions),
    }


def _number(row: dict[str, object], key: str, fmt: str) -> str:
    value = row[key]
    return "-" if value is None else format(value, fmt)


def main() -> int:
    workload = burst_workload(BASE, BURST, BURST_START, BURST_SECONDS, HORIZON, seed=7)
    print(f"{BASE:g} req/s, then a burst of {BURST:g} req/s from t={BURST_START:g} s for {BURST_SECONDS:g} s; "
          f"{HORIZON:g} s; CPU-bound single-threaded app, {APP['service_time']:g} s of CPU per request")
    header = (f"{'autoscaler':<28} {'react s':>7} {'peak':>4} {'at s':>5} {'burst p50':>9} {'burst p99':>9}"
              f" {'p99 all':>7} {'lost':>5} {'pod-s':>7} {'min pods':>8} {'to <=1 s':>10}")
    print(header)
    rows = []
    for name, (row_annotations, cc) in ROWS.items():
        result = simulate_autoscaling(workload, row_annotations, duration=HORIZON, seed=1,
                                      container_concurrency=cc, **APP)  # type: ignore[arg-type]
        row = {"autoscaler": name, "annotations": row_annotations, "container_concurrency": cc,
               **measure(result)}
        rows.append(row)
        num = functools.partial(_number, row)
        print(f"{name:<28} {num('reaction_seconds', '7.0f')} {row['peak_ready_pods']:>4} "
              f"{num('peak_at_seconds', '5.0f')} {num('burst_latency_p50', '9.3f')} "
              f"{num('burst_latency_p99', '9.2f')} {num('latency_p99', '7.2f')} {row['rejected']:>5} "
              f"{num('pod_seconds', '7.0f')} {row['min_ready_pods']:>8} "
              f"{num('down_to_one_pod_after_burst_seconds', '10.0f')}")
    print("ready pods every 30 s:")
    for row in rows:
        print(f"  {row['autoscaler']:<28} {' '.join(f'{p:>2}' for p in row['ready_pods_every_30s'])}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "numpy": np.__version__},
        "scenario": {"base_rate": BASE, "burst_rate": BURST, "burst_start": BURST_START,
                     "burst_seconds": BURST_SECONDS, "horizon": HORIZON, "workload_seed": 7,
                     "simulation_seed": 1, **APP},
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
