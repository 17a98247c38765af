"""Benchmark: the lab's canary gates over many simulated rollouts, the simulator's speed, and
the accuracy of labkit's traffic splits.

Targets (issue 10):

* over 1,000 seeded rollouts, the lab's default gates (`labkit.sim.canary.canary_manifest()`:
  request-success-rate >= 99 %, request-duration p99 <= 500 ms, interval 1m, threshold 5,
  stepWeight 10, maxWeight 50; 10 req/s of user traffic, `Traffic()`) catch a new version
  with 5 points more 5xx before 25 % of requests reach it (rolled back, and its canary weight
  never reached 25 %) in >= 95 % of runs, and roll back a version as good as the primary in
  <= 2 % of runs;
* 1,000 simulated rollouts of 10 steps (stepWeight 5 up to maxWeight 50, a good version, so
  every run goes all the way) in under 10 s of wall-clock time (best of three; the machine
  is shared);
* over 10,000 requests, the canary share of a 90/10 split lies inside the binomial 99.9 %
  interval, for each way labkit makes the split (see `canary_split.py`).

There is no other canary simulator to run beside it: each row is compared with its target.
Results go to bench/results/canary.json.

    python bench/bench_canary.py            # about 10-20 seconds
    python bench/bench_canary.py --quick    # 100 rollouts, 1,000 requests: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canary_split import split_rows

from labkit.sim.canary import canary_manifest, run_many

RESULTS = Path(__file__).resolve().parent / "results" / "canary.json"
SEED = 1
CAUGHT_TARGET, FALSE_ROLLBACK_TARGET, WEIGHT_LIMIT = 0.95, 0.02, 25
TIME_TARGET_SECONDS = 10.0


def gates_rows(n: int) -> list[dict[str, object]]:
    rows = []
    for failure in ("errors", "none"):
        batch = run_many(n, SEED, canary_manifest(), failure=failure)
        share = batch.exposed_share()
        detection = batch.detection_seconds()
        rows.append({
            "failure": failure, "rollouts": n, "rolled_back": batch.rollback_rate,
            "caught_below_25": batch.caught_below(WEIGHT_LIMIT),
            "exposed_share_p50": float(np.median(share)), "exposed_share_p95": float(np.quantile(share, 0.95)),
            "exposed_users_p50": float(np.median(batch.exposed_users())),
            "detection_seconds_p50": float(np.median(detection)) if len(detection) else None,
        })
    return rows


def speed_row(n: int, repeats: int) -> dict[str, object]:
    canary = canary_manifest(step_weight=5, max_weight=50)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        batch = run_many(n, SEED, canary, failure="none")
        times.append(time.perf_counter() - started)
    steps = sum(m.startswith("Advance model.default canary weight") for m in
                (msg for d in batch.runs[0].timeline for msg in d.messages))
    return {"rollouts": n, "weight_steps": steps, "promoted": 1 - batch.rollback_rate,
            "wall_seconds_best": min(times), "wall_seconds_all": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 rollouts and 1,000 requests")
    args = parser.parse_args()
    n, requests, repeats = (100, 1_000, 1) if args.quick else (1_000, 10_000, 3)

    gates = gates_rows(n)
    bad, good = gates
    print(f"lab default gates over {n} seeded rollouts (10 req/s, interval 1m, threshold 5, step 10 to 50):")
    print(f"{'new version':<22} {'rolled back':>11} {'caught <25%':>11} {'share p50/p95':>15} {'users p50':>9}"
          f" {'1st failed check p50 s':>22}")
    for row, name in ((bad, "+5 points of 5xx"), (good, "as good as primary")):
        detect = "-" if row["detection_seconds_p50"] is None else f"{row['detection_seconds_p50']:g}"
        caught = f"{row['caught_below_25']:.1%}" if row is bad else "-"
        print(f"{name:<22} {row['rolled_back']:>11.1%} {caught:>11} "
              f"{row['exposed_share_p50']:>7.1%}/{row['exposed_share_p95']:<7.1%} {row['exposed_users_p50']:>9g}"
              f" {detect:>22}")
    caught_ok = bad["caught_below_25"] >= CAUGHT_TARGET
    false_ok = good["rolled_back"] <= FALSE_ROLLBACK_TARGET
    print(f"target: caught before 25 % in >= {CAUGHT_TARGET:.0%}: {'met' if caught_ok else 'MISSED'}; "
          f"false rollbacks <= {FALSE_ROLLBACK_TARGET:.0%}: {'met' if false_ok else 'MISSED'}")

    speed = speed_row(n, repeats)
    best = float(speed["wall_seconds_best"])  # type: ignore[arg-type]
    speed_ok = args.quick or best < TIME_TARGET_SECONDS
    ratio = "-" if args.quick else f"{TIME_TARGET_SECONDS / best:.1f}x faster than the target"
    print(f"\n{n} rollouts of {speed['weight_steps']} weight steps: best {best:.2f} s "
          f"(target < {TIME_TARGET_SECONDS:g} s: {ratio})")

    splits = split_rows(requests, SEED)
    print(f"\n90/10 split over {requests:,} requests, binomial 99.9 % interval "
          f"{splits[0]['interval'][0]}-{splits[0]['interval'][1]} canary requests:")
    for row in splits:
        print(f"{row['way']:<32} {row['canary']:>6,} canary ({row['share']:.2%})  "
              f"{'inside' if row['inside'] else 'OUTSIDE'}")
    splits_ok = all(row["inside"] for row in splits)

    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "python": sys.version.split()[0], "numpy": np.__version__,
                        "load_average": os.getloadavg()},
            "seed": SEED, "gates": gates, "speed": speed, "splits": splits,
            "targets": {"caught_below_25": CAUGHT_TARGET, "false_rollbacks": FALSE_ROLLBACK_TARGET,
                        "seconds_for_1000": TIME_TARGET_SECONDS},
        }, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0 if caught_ok and false_ok and speed_ok and splits_ok else 1


if __name__ == "__main__":
    sys.exit(main())
