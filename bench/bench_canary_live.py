"""Benchmark: how long the live Flagger controller takes to promote and to roll back.

Target (issue 10): with 2 s intervals, a rollout promotes in interval x steps (+ one interval)
and rolls back within threshold x interval (+ one interval) of the first failing check.

The rollout: podinfo (labkit/httpbin, sidecar'd) with a Canary of interval 2s, stepWeight 25,
maxWeight 50, threshold 2, request-success-rate >= 99 % over 2s, under steady traffic through a
client sidecar. Its steps after the new revision is noticed: weight 25, weight 50, promote,
route all to primary, finish = 5 intervals; the revision is noticed at the first tick after the
apply, up to one interval later (timed from the moment apply() returns, the new pods ready).
The bad version answers 500: the first failing check and the
rollback are read from the Canary's event times.

    python bench/bench_canary_live.py     # about 40 seconds
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from labkit import load
from labkit.cluster import LocalCluster
from labkit.flagger.podinfo import podinfo_deployment
from labkit.mesh.control import control_plane

RESULTS = Path(__file__).resolve().parent / "results" / "canary_live.json"
INTERVAL, THRESHOLD, STEPS = 2.0, 2, 5
NS = "default"

CANARY = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": NS},
          "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                   "service": {"port": 9898},
                   "analysis": {"interval": f"{INTERVAL:g}s", "threshold": THRESHOLD, "stepWeight": 25,
                                "maxWeight": 50, "metrics": [{"name": "request-success-rate",
                                                              "interval": f"{INTERVAL:g}s",
                                                              "thresholdRange": {"min": 99}}]}}}


def phase(cluster: LocalCluster) -> str:
    return cluster.get("Canary", "podinfo", NS).status.detail["status"]["phase"]


def wait(cluster: LocalCluster, wanted: str, limit: float = 120.0) -> float:
    deadline = time.monotonic() + limit
    while phase(cluster) != wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"never reached {wanted}")
        time.sleep(0.01)
    return time.monotonic()


def event_time(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def main() -> int:
    os.environ.setdefault("LABKIT_FLAGGER_STATE", tempfile.mkdtemp(prefix="flagger-bench-"))
    with LocalCluster() as cluster:
        cluster.apply([{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}},
                       podinfo_deployment("v1", namespace=NS)])
        cluster.apply(CANARY)
        proxy = control_plane(cluster).client(NS).outbound_url
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                load.run("http://podinfo:9898/get", requests=20, concurrency=2, qps=50, proxy=proxy)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            cluster.apply(podinfo_deployment("v2", namespace=NS))  # returns once the new version's pod is ready
            start = time.monotonic()
            promoted = wait(cluster, "Succeeded") - start
            cluster.apply(podinfo_deployment("v3", failing=True, namespace=NS))
            wait(cluster, "Failed")
        finally:
            stop.set()
            sender.join(timeout=30)
        events = cluster.get("Canary", "podinfo", NS).status.detail["events"]
    first_fail = next(e for e in events if e["message"].startswith("Halt podinfo.default advancement success rate"))
    failed = next(e for e in events if e["message"].startswith("Canary failed!"))
    rollback = event_time(failed) - event_time(first_fail)

    promote_target, rollback_target = INTERVAL * STEPS, INTERVAL * THRESHOLD
    rows = {
        "promote": {"seconds": round(promoted, 3), "interval_x_steps": promote_target,
                    "bound": promote_target + INTERVAL, "ratio": round(promoted / promote_target, 3),
                    "met": promoted <= promote_target + INTERVAL},
        "rollback": {"seconds": round(rollback, 3), "threshold_x_interval": rollback_target,
                     "bound": rollback_target + INTERVAL, "ratio": round(rollback / rollback_target, 3),
                     "met": rollback <= rollback_target + INTERVAL},
    }
    print(f"interval {INTERVAL:g}s, {STEPS} steps after the new revision is noticed, threshold {THRESHOLD}")
    print(f"promote : {promoted:6.2f} s from the new version applied to Succeeded; "
          f"interval x steps = {promote_target:g} s, bound {promote_target + INTERVAL:g} s: "
          f"{'met' if rows['promote']['met'] else 'MISSED'}")
    print(f"rollback: {rollback:6.2f} s from the first failing check to rollback; threshold x interval = "
          f"{rollback_target:g} s, bound {rollback_target + INTERVAL:g} s: "
          f"{'met' if rows['rollback']['met'] else 'MISSED'}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": sys.version.split()[0], "load_average": os.getloadavg()},
        "interval_seconds": INTERVAL, "threshold": THRESHOLD, "steps": STEPS, **rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if rows["promote"]["met"] and rows["rollback"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
