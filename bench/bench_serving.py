"""Knative Serving on a laptop: what the data path adds, and what a cold start costs.

One run, one cluster, the same replica process (labkit/hello) reached four ways, interleaved
request by request at a fixed total rate (100 req/s by default) so every path sees the same
machine load:

- ``direct``: the replica's own port (the peer: no platform at all);
- ``queue-proxy``: the pod's queue-proxy (breaker, stats, latency histogram);
- ``route (Serve)``: the ingress, then the queue-proxy (the activator out of the path:
  target-burst-capacity 0);
- ``route (Proxy)``: the ingress, the activator, then the queue-proxy (TBC -1: activator always
  in the path).

The load comes from a separate client process (so it does not share the cluster's GIL) on
kept-alive connections, one request at a time. Added latency is a path's p50/p90/p99 minus
the direct path's. Then cold starts: a revision at zero gets one request through the
activator, and both the replica's spawn-to-ready time and the client's first-request latency
are recorded. Results: bench/results/serving.json. Target: queue-proxy adds < 1 ms at p50.

    python bench/bench_serving.py           # about a minute
    python bench/bench_serving.py --quick   # seconds; checks the script, numbers not meaningful
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"


def _service(name: str, annotations: dict[str, str]) -> str:
    lines = "".join(f'\n        {k}: "{v}"' for k, v in annotations.items())
    return f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:{lines}
    spec:
      containers:
        - image: labkit/hello
"""


def client(urls: list[str], per_path: int, rate: float) -> dict[str, list[float]]:
    """Open-loop pacing at `rate` req/s in total, paths interleaved; latencies in ms."""
    conns = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        conns.append((http.client.HTTPConnection(parts.hostname, parts.port, timeout=30),
                      parts.path or "/"))
    out: dict[str, list[float]] = {url: [] for url in urls}
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(per_path * len(urls)):
        url = urls[i % len(urls)]
        conn, path = conns[i % len(urls)]
        next_at += interval
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        if i >= len(urls) * 20:  # the first rounds warm connections and pools up
            out[url].append(elapsed * 1000)
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p90": cuts[89], "p99": cuts[98]}


def run(per_path: int, rate: float, cold_runs: int) -> dict[str, object]:
    from labkit.cluster import LocalCluster
    from labkit.serving.autoscaler_config import AutoscalerConfig
    from labkit.serving.service import configure_serving, knative_service

    with LocalCluster() as cluster:
        configure_serving(cluster, autoscaler=AutoscalerConfig(allow_zero_initial_scale=True,
                                                               scale_to_zero_grace_period=6.0))
        cluster.apply(_service("serve", {"autoscaling.knative.dev/target-burst-capacity": "0",
                                         "autoscaling.knative.dev/min-scale": "1",
                                         "autoscaling.knative.dev/max-scale": "1"}))
        cluster.apply(_service("proxy", {"autoscaling.knative.dev/target-burst-capacity": "-1",
                                         "autoscaling.knative.dev/min-scale": "1",
                                         "autoscaling.knative.dev/max-scale": "1"}))
        serve, proxy = knative_service(cluster, "serve"), knative_service(cluster, "proxy")
        deadline = time.monotonic() + 20
        while serve.revision().mode != "Serve" and time.monotonic() < deadline:
            time.sleep(0.05)
        pod = serve.revision().ready_pods()[0]
        paths = {
            "direct": pod.replica.url + "/",
            "queue-proxy": f"{pod.url}/",
            "route (Serve)": serve.url + "/",
            "route (Proxy)": proxy.url + "/",
        }
        done = subprocess.run(
            [sys.executable, __file__, "--client", json.dumps(list(paths.values())),
             str(per_path), str(rate)], capture_output=True, text=True, check=True)
        latencies = json.loads(done.stdout)
        assert serve.revision().mode == "Serve" and proxy.revision().mode == "Proxy"
        assert proxy.activator.forwarded >= per_path - 20

        # Cold starts as a revision idle at zero meets them: one Service scaled to zero and
        # woken again. Its very first request is not counted: a new revision's autoscaler has
        # made no decision yet and ignores the activator's poke until its first tick (Knative's
        # scalerRunner starts at latestScale -1, pkg/autoscaler/scaling/multiscaler.go).
        cluster.apply(_service("cold", {"autoscaling.knative.dev/initial-scale": "0",
                                        "autoscaling.knative.dev/window": "6s"}))
        svc = knative_service(cluster, "cold")
        autoscaler = svc.autoscalers[svc.revision().name]
        cold = []
        for i in range(cold_runs + 1):
            deadline = time.monotonic() + 60
            while (svc.revision().replica_count or autoscaler.desired_scale != 0) and time.monotonic() < deadline:
                time.sleep(0.05)
            start = time.perf_counter()
            with urllib.request.urlopen(svc.url + "/", timeout=30) as response:
                response.read()
            first = time.perf_counter() - start
            if i:
                cold.append({"spawn_to_ready_ms": svc.revision().cold_starts[-1].seconds * 1000,
                             "first_request_ms": first * 1000})

    direct = _quantiles(latencies[paths["direct"]])
    rows = {}
    for label, url in paths.items():
        q = _quantiles(latencies[url])
        rows[label] = {**{k: round(v, 3) for k, v in q.items()},
                       **{f"added_{k}": round(q[k] - direct[k], 3) for k in q},
                       "requests": len(latencies[url])}
    return {
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "rate_req_s": rate,
        "paths_ms": rows,
        "cold_starts_ms": cold,
        "cold_start_median_ms": {
            k: round(statistics.median(c[k] for c in cold), 1)
            for k in ("spawn_to_ready_ms", "first_request_ms")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--client", nargs=3, metavar=("URLS", "PER_PATH", "RATE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        urls, per_path, rate = json.loads(args.client[0]), int(args.client[1]), float(args.client[2])
        print(json.dumps(client(urls, per_path, rate)))
        return 0
    result = run(per_path=60 if args.quick else 1500, rate=args.rate,
                 cold_runs=2 if args.quick else 7)
    print(f"{'path':<15} {'p50':>7} {'p90':>7} {'p99':>7}   added: {'p50':>7} {'p90':>7} {'p99':>7}  (ms)")
    for label, row in result["paths_ms"].items():  # type: ignore[union-attr]
        print(f"{label:<15} {row['p50']:7.3f} {row['p90']:7.3f} {row['p99']:7.3f}          "
              f"{row['added_p50']:7.3f} {row['added_p90']:7.3f} {row['added_p99']:7.3f}")
    print("cold start (median):", result["cold_start_median_ms"])
    qp = result["paths_ms"]["queue-proxy"]["added_p50"]  # type: ignore[index]
    print(f"queue-proxy adds {qp:.3f} ms at p50 (target < 1 ms): {'met' if qp < 1 else 'MISSED'}")
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
