"""Checks for labs/09_kserve_data_flow.ipynb.

The givens of each task live here next to its check, so the notebook shows the same facts the
check recomputes from. Expected answers come from the seeded data-flow simulator
(labkit.sim.dataflow), which the student uses too; no live component is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from labkit.grading.checks import NotAnsweredError, fail, passed, require_number
from labkit.sim.dataflow import HOPS, simulate_dataflow

# --- Exercise 1: the dominant hop -----------------------------------------------------------

DOMINANT_TASK: dict[str, dict[str, Any]] = {
    "busy digits service": {"model": "digits-random-forest", "min_replicas": 1, "arrival_rate": 20.0},
    "rarely used large model": {"model": "large-model-2GB", "min_replicas": 0, "arrival_rate": 0.01},
    "tiny model, slow proxies": {"model": "iris-logistic-regression", "min_replicas": 1,
                                 "arrival_rate": 5.0, "proxy_ms": 1.5},
}
"""Three InferenceServices (simulate_dataflow settings; duration 3600 s, seed 1). Which hop
takes the most time for the requests around the p99 latency (`breakdown("p99")`)?"""
DOMINANT_DURATION = 3600.0


def dominant_hops() -> dict[str, str]:
    return {name: simulate_dataflow(duration=DOMINANT_DURATION, seed=1, **settings).dominant_hop("p99")
            for name, settings in DOMINANT_TASK.items()}


def check_dominant_hops(answer: object) -> None:
    """scenario -> hop name (one of labkit.sim.dataflow.HOPS)."""
    if answer is None or answer is Ellipsis or answer is NotImplemented:
        raise NotAnsweredError("dominant hops: no answer yet.\nHINT: fill in the dictionary.")
    if not isinstance(answer, Mapping) or set(answer) != set(DOMINANT_TASK):
        fail(f"expected a dict with exactly the keys {sorted(DOMINANT_TASK)}.",
             "copy the scenario names from DOMINANT_TASK.")
    unknown = sorted(k for k, v in answer.items() if v not in HOPS)
    if unknown:
        fail(f"{unknown}: each answer must be a hop name from HOPS.", f"the hops are {', '.join(HOPS)}.")
    expected = dominant_hops()
    wrong = sorted(k for k in expected if answer[k] != expected[k])
    if wrong:
        fail(f"look again at {', '.join(map(repr, wrong))}.",
             "run simulate_dataflow with the scenario's settings and read breakdown('p99'): at p99 "
             "a rarely used service meets cold starts; a busy one spends its time in the model.")
    passed(f"dominant hops: all {len(expected)} right")


# --- Exercise 2: minReplicas for an SLO -------------------------------------------------------

SLO_TASK = {"model": "digits-random-forest", "arrival_rate": 0.05, "duration": 3600.0, "seed": 1}
"""The digits service gets a request every 20 s on average. For a p99 SLO, the smallest
minReplicas (0..3) whose simulated p99 latency (ms) is within it."""
SLO_CASES = (50.0, 5000.0)


def smallest_min_replicas(slo_ms: float, **given: Any) -> int | None:
    """The reference answer: the first minReplicas in 0..3 meeting the SLO, None if none does."""
    settings = {**SLO_TASK, **given}
    for replicas in range(4):
        if simulate_dataflow(min_replicas=replicas, **settings).p99 <= slo_ms:
            return replicas
    return None


def check_min_replicas(choose: object) -> None:
    """A function slo_ms -> the smallest minReplicas meeting it (for SLO_TASK)."""
    if choose is None or choose is Ellipsis or choose is NotImplemented:
        raise NotAnsweredError("choose_min_replicas: no answer yet.\nHINT: define the function.")
    if not callable(choose):
        fail("choose_min_replicas should be a function of slo_ms.", "def choose_min_replicas(slo_ms): ...")
    function: Callable[[float], Any] = choose
    for slo in SLO_CASES:
        got = require_number(f"choose_min_replicas({slo:g})", function(slo))
        if got != smallest_min_replicas(slo):
            fail(f"choose_min_replicas({slo:g}) = {got:g} is not the smallest minReplicas meeting it.",
                 "try minReplicas 0, 1, 2, ... in order with simulate_dataflow(**SLO_TASK, "
                 "min_replicas=n) and return the first whose p99 is within the SLO; a loose "
                 "SLO can absorb a cold start, a tight one cannot.")
    passed("choose_min_replicas gives the cheapest setting for a tight and a loose SLO")
