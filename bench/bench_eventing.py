"""Eventing benchmark: producer -> broker (durable) + trigger -> subscriber, vs a direct POST.

Both paths run in the same process run against the same subscriber process (labkit's
event-display app); the broker is its own process with its SQLite log, as in the labs:

* throughput: a closed loop of CONCURRENCY producers sends N events; events/s is counted from
  the first send to the last event *received by the subscriber* (end to end);
* latency: an open loop at 200 events/s (Poisson, seeded); delivery latency is the subscriber's
  receive time minus the producer's send time (an extension carries it).

    python bench/bench_eventing.py            # about a minute; writes bench/results/eventing.json
    python bench/bench_eventing.py --quick    # seconds; checks the script, numbers not meaningful
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from labkit.cluster import LocalCluster
from labkit.eventing.broker_control import broker_handle
from labkit.eventing.sink import received_from
from labkit.eventing.wire import Client
from labkit.net import ReplicaProcess, python_command

RESULTS = Path(__file__).resolve().parent / "results" / "eventing.json"


def _headers(i: int, run: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": f"{run}-{i}", "ce-source": "/bench",
            "ce-type": "com.example.bench", "ce-sentat": repr(time.time()),
            "content-type": "application/json"}


async def _closed_loop(url: str, total: int, concurrency: int, run: str) -> float:
    client = Client()
    counter = iter(range(total))
    started = time.perf_counter()

    async def producer() -> None:
        for i in counter:
            answer = await client.request("POST", url, _headers(i, run), b'{"n": 1}')
            if answer.status >= 300:
                raise RuntimeError(f"event {i}: HTTP {answer.status} {answer.body[:200]!r}")

    await asyncio.gather(*(producer() for _ in range(concurrency)))
    client.close()
    return started


async def _open_loop(url: str, rate: float, seconds: float, run: str, seed: int) -> None:
    client = Client()
    rng = random.Random(seed)
    tasks = []
    next_at = time.perf_counter()
    for i in range(int(rate * seconds)):
        next_at += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(client.request("POST", url, _headers(i, run), b"{}")))
    for answer in await asyncio.gather(*tasks):
        if answer.status >= 300:
            raise RuntimeError(f"HTTP {answer.status}")
    client.close()


def _records(sink_url: str, run: str) -> list[dict]:
    return [r for r in received_from(sink_url) if r["attributes"]["id"].startswith(run + "-")]


def _wait_received(sink_url: str, run: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = _records(sink_url, run)
        if len({r["attributes"]["id"] for r in records}) >= count:
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run}: only {len(records)} of {count} events arrived")
        time.sleep(0.05)


def throughput(url: str, sink_url: str, total: int, concurrency: int, run: str) -> float:
    started = asyncio.run(_closed_loop(url, total, concurrency, run))
    records = _wait_received(sink_url, run, total, 120)
    started_epoch = time.time() - (time.perf_counter() - started)
    last = max(r["time"] for r in records)
    return total / (last - started_epoch)


def latency(url: str, sink_url: str, rate: float, seconds: float, run: str) -> dict[str, float]:
    asyncio.run(_open_loop(url, rate, seconds, run, seed=1))
    records = _wait_received(sink_url, run, int(rate * seconds), 60)
    delays = sorted((r["time"] - float(r["attributes"]["sentat"])) * 1000 for r in records)
    quantiles = statistics.quantiles(delays, n=100)
    return {"p50_ms": round(statistics.median(delays), 3), "p99_ms": round(quantiles[98], 3),
            "events": len(delays)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 600 if args.quick else 6000
    seconds = 1.0 if args.quick else 5.0
    concurrency = 32
    subscriber = ReplicaProcess(python_command("labkit.apps.event_display"), name="bench-sink")
    with subscriber, LocalCluster() as cluster:
        cluster.apply(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: bench}}
spec:
  delivery: {{retry: 3, backoffPolicy: exponential, backoffDelay: PT0.1S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: bench
  filter: {{attributes: {{type: com.example.bench}}}}
  subscriber: {{uri: "{subscriber.url}"}}
""")
        broker_url = broker_handle(cluster, "bench").url
        # warm both paths (imports, connections, SQLite pages)
        throughput(broker_url, subscriber.url, 200, concurrency, "warm-broker")
        throughput(subscriber.url, subscriber.url, 200, concurrency, "warm-direct")
        rows = {}
        for attempt in range(1 if args.quick else 2):  # best of two: the machine is shared
            for name, url in (("broker", broker_url), ("direct", subscriber.url)):
                rate = throughput(url, subscriber.url, total, concurrency, f"tp{attempt}-{name}")
                rows.setdefault(name, {})["events_per_s"] = max(
                    rows.get(name, {}).get("events_per_s", 0.0), round(rate, 1))
        for name, url in (("broker", broker_url), ("direct", subscriber.url)):
            rows[name].update(latency(url, subscriber.url, 200.0, seconds, f"lat-{name}"))
    result = {
        "machine": {"python": platform.python_version(), "processor": platform.processor()
                    or platform.machine(), "cores": _cores()},
        "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "events": total,
        "concurrency": concurrency, "latency_rate_per_s": 200, "rows": rows,
        "broker_vs_direct_throughput": round(rows["broker"]["events_per_s"]
                                             / rows["direct"]["events_per_s"], 3),
    }
    print(f"{'path':<8} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<8} {row['events_per_s']:>10,.0f} {row['p50_ms']:>8.2f} "
              f"{row['p99_ms']:>8.2f}")
    print(f"broker / direct throughput: {result['broker_vs_direct_throughput']:.2f}x")
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
