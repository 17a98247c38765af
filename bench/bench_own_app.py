"""Benchmark: a student's FastAPI app against the built-in hello app, cold from zero.

Both run as Knative Services with initial-scale 0 on one LocalCluster: each round sends one
request to the Service's URL while no pod runs, so the activator holds it while a replica
process starts. Reported per app: spawn to ready (the revision's ColdStart record: the process
start until its port accepts a connection, Knative's default readiness probe) and the first
request's latency seen by the client (activator hold + proxying + the app's first answer), as
medians over the rounds (every value is kept in the JSON), and the ratio FastAPI / hello.
Between rounds the revision scales back to zero (scale-to-zero grace period 1 s, stable
window 6 s). The gap between the two numbers is the activator and autoscaler reacting plus
the app's own first answer (a FastAPI app's first request is slower than its later ones).

    python bench/bench_own_app.py              # about two minutes
    python bench/bench_own_app.py --rounds 1   # a check that the script runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml

from labkit.cluster import LocalCluster
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving, knative_service

RESULTS = Path(__file__).resolve().parent / "results" / "own_app.json"
APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello() -> dict:
    return {"hello": "world"}
'''
ANNOTATIONS = {"autoscaling.knative.dev/initial-scale": "0",
               "autoscaling.knative.dev/window": "6s"}


def service(name: str, container: dict) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": ANNOTATIONS},
                              "spec": {"containers": [container]}}}})


def measure(cluster: LocalCluster, name: str, rounds: int) -> dict[str, object]:
    svc = knative_service(cluster, name)
    revision = svc.revision()
    first_request: list[float] = []
    for _ in range(rounds):
        deadline = time.monotonic() + 60
        while revision.replica_count:  # wait for zero: the autoscaler's decision, not a sleep
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not scale to zero in 60 s")
            time.sleep(0.1)
        began = time.perf_counter()
        response = httpx.get(svc.url + "/", timeout=60)
        first_request.append(time.perf_counter() - began)
        response.raise_for_status()
    starts = [c.seconds for c in revision.cold_starts if c.from_zero and c.seconds is not None]
    return {"rounds": rounds, "spawn_to_ready_s": statistics.median(starts),
            "first_request_s": statistics.median(first_request),
            "spawn_to_ready_all": starts, "first_request_all": first_request}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalCluster(start_timeout=60) as cluster:
        (Path(folder) / "main.py").write_text(APP)
        configure_serving(cluster, autoscaler=AutoscalerConfig(
            scale_to_zero_grace_period=1.0, allow_zero_initial_scale=True))
        cluster.apply(service("hello", {"image": "labkit/hello"}))
        cluster.apply(service("fastapi", {
            "image": "my-fastapi-app", "workingDir": folder,
            "command": [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1",
                        "--port", "$(PORT)"]}))
        results = {name: measure(cluster, name, args.rounds) for name in ("hello", "fastapi")}
    ratio = {key: results["fastapi"][key] / results["hello"][key]  # type: ignore[operator]
             for key in ("spawn_to_ready_s", "first_request_s")}
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "python": sys.version.split()[0], "results": results, "ratio_fastapi_to_hello": ratio}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in results.items():
        print(f"{name:8} spawn->ready {row['spawn_to_ready_s']:.3f} s   "
              f"first request {row['first_request_s']:.3f} s")
    print(f"FastAPI / hello: spawn->ready x{ratio['spawn_to_ready_s']:.1f}, "
          f"first request x{ratio['first_request_s']:.1f}  ({RESULTS})")


if __name__ == "__main__":
    main()
