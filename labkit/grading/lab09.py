"""Checks for labs/09_kserve_data_flow.ipynb.

The givens of each task live here next to its check, so the notebook shows the same facts the
check recomputes from. Expected answers come from the seeded data-flow simulator
(labkit.sim.dataflow), which the student uses too; no live component is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from labkit.grading.checks import NotAnsweredError, fail, passed, require_number
from labkit.sim.dataflow import HOPS, DataflowResult, simulate_dataflow

# --- Exercise 1: the dominant hop, by the student's own rule ------------------------------

DOMINANT_TASK: dict[str, dict[str, Any]] = {
    "busy digits service": {"model": "digits-random-forest", "min_replicas": 1, "arrival_rate": 20.0},
    "rarely used large model": {"model": "large-model-2GB", "min_replicas": 0, "arrival_rate": 0.01},
    "tiny model, slow proxies": {"model": "iris-logistic-regression", "min_replicas": 1,
                                 "arrival_rate": 5.0, "proxy_ms": 1.5},
}
"""Three InferenceServices (simulate_dataflow settings; duration 3600 s, seed 1) to try the
student's `dominant_hop_near(result, q)` on, at p50 and p99."""
DOMINANT_DURATION = 3600.0
DOMINANT_PERCENTILES = (50, 99)


class _OwnWork(DataflowResult):
    """A result whose ready-made answers are switched off: the exercise is to write them."""

    def breakdown(self, which: str = "mean") -> dict[str, float]:
        raise RuntimeError("breakdown() is switched off in this exercise: compute the means from "
                           "result.latency_ms and result.hops yourself")

    def dominant_hop(self, which: str = "mean") -> str:
        raise RuntimeError("dominant_hop() is switched off in this exercise: that is what you write")


def _sealed(result: DataflowResult) -> _OwnWork:
    return _OwnWork(**{f.name: getattr(result, f.name) for f in fields(result)})


def check_dominant_hops(rule: object) -> None:
    """`rule(result, q)` -> the hop with the largest mean time among the ~1 % of requests
    nearest the q-th percentile of the end-to-end latency."""
    if rule is None or rule is Ellipsis or rule is NotImplemented:
        raise NotAnsweredError("dominant_hop_near: no answer yet.\nHINT: define the function.")
    if not callable(rule):
        fail("dominant_hop_near should be a function of (result, q).", "def dominant_hop_near(result, q): ...")
    wrong = []
    for name, settings in DOMINANT_TASK.items():
        result = simulate_dataflow(duration=DOMINANT_DURATION, seed=1, **settings)
        for q in DOMINANT_PERCENTILES:
            try:
                got = rule(_sealed(result), q)
            except RuntimeError as exc:
                fail(f"dominant_hop_near({name!r}, {q}) raised: {exc}.",
                     "use result.percentile(q), result.latency_ms and result.hops[hop].")
            if got not in HOPS:
                fail(f"dominant_hop_near(..., {q}) returned {got!r}, not a hop name.",
                     f"the hops are {', '.join(HOPS)}.")
            if got != result.dominant_hop(f"p{q}"):
                wrong.append(f"{name} at p{q} (you said {got})")
    if wrong:
        fail(f"look again at: {'; '.join(wrong)}.",
             "take the requests nearest the percentile (np.argsort of the absolute distance of "
             "latency_ms to result.percentile(q), the first max(1, requests // 100)), then the mean of "
             "each hop over just those; at p99 a rarely used service meets its cold starts.")
    passed(f"dominant_hop_near agrees with the simulator on {len(DOMINANT_TASK)} services at p50 and p99")


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
