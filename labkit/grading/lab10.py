"""Checks for labs/10_canary_ab_models.ipynb.

The givens of each task live here next to its check, so the notebook prints the same facts the
check recomputes from. Expected answers come from labkit's own pure pieces: the canary
simulator (`labkit.sim.canary`, Flagger's analysis step on a modelled fleet, seeded) and the
A/B statistics (`labkit.quality.abtest`). No live component is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from labkit.grading.checks import NotAnsweredError, check_choices, fail, passed
from labkit.quality.abtest import sample_size_per_arm, two_proportion_z_test
from labkit.sim.canary import CanaryBatch, Traffic, canary_manifest, run_many
from labkit.stats import percentile

# --- Exercise 1: gates that catch a 5-point accuracy drop and spare a good model --------------


@dataclass(frozen=True)
class GateTask:
    traffic: Traffic
    interval: str
    max_weight: int
    rollouts: int
    seed: int
    min_caught: float
    """Share of rollouts of the worse model that must end rolled back."""
    max_exposed_p95: int
    """95th percentile of user requests answered by the worse model, at most."""
    max_false_rollbacks: float
    """Share of rollouts of an equally good model that may be rolled back."""


GATE_TASK = GateTask(traffic=Traffic(rate=40.0, feedback_fraction=0.5, feedback_delay=10.0),
                     interval="1m", max_weight=50, rollouts=200, seed=10, min_caught=0.95,
                     max_exposed_p95=5000, max_false_rollbacks=0.02)
"""40 requests/s; half the predictions get their true label back, after 10 s on average; the
primary is 90 % accurate and the new model 5 points worse (the simulator's `quality` failure)."""

GATE_KEYS = {"min_accuracy": (50.0, 100.0), "min_samples": (1, 100_000), "threshold": (1, 100),
             "step_weight": (1, 50)}


def _unanswered(value: object) -> bool:
    return value is None or value is Ellipsis or value is NotImplemented


def _gate_settings(gates: object) -> dict[str, float]:
    if _unanswered(gates):
        raise NotAnsweredError("gates: no answer yet.\nHINT: fill in the four numbers.")
    if not isinstance(gates, Mapping) or set(gates) != set(GATE_KEYS):
        fail(f"gates must be a dict with exactly the keys {sorted(GATE_KEYS)}.",
             "keep the dict from the exercise cell and change only the numbers.")
    for key, (low, high) in GATE_KEYS.items():
        value = gates[key]
        if _unanswered(value) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            fail(f"gates[{key!r}] = {value!r} must be a number within {low:g}..{high:g}.",
                 "min_accuracy is in percent; min_samples, threshold and step_weight are whole numbers.")
        if key != "min_accuracy" and value != int(value):
            fail(f"gates[{key!r}] = {value!r} must be a whole number.", "Flagger's fields are integers.")
    return {k: gates[k] for k in GATE_KEYS}


def simulate_gates(gates: Mapping[str, float], task: GateTask = GATE_TASK) -> tuple[CanaryBatch, CanaryBatch]:
    """(the worse model's rollouts, the equally good model's rollouts) under these gates."""
    manifest = canary_manifest(interval=task.interval, max_weight=task.max_weight,
                               step_weight=int(gates["step_weight"]), threshold=int(gates["threshold"]),
                               min_accuracy=float(gates["min_accuracy"]),
                               min_samples=int(gates["min_samples"]))
    worse = run_many(task.rollouts, task.seed, manifest, traffic=task.traffic, failure="quality")
    good = run_many(task.rollouts, task.seed, manifest, traffic=task.traffic, failure="none")
    return worse, good


def check_gates(gates: object) -> None:
    """Gates that roll back the 5-points-worse model early and keep the good one."""
    settings = _gate_settings(gates)
    worse, good = simulate_gates(settings)
    caught = worse.rollback_rate
    exposed = percentile(worse.exposed_requests(), 95)
    false = good.false_rollback_rate
    problems = []
    if caught < GATE_TASK.min_caught:
        problems.append(f"the worse model was rolled back in only {caught:.0%} of the rollouts "
                        f"(target >= {GATE_TASK.min_caught:.0%})")
    if exposed > GATE_TASK.max_exposed_p95:
        problems.append(f"in 5 % of the rollouts more than {exposed:,.0f} user requests reached it "
                        f"(target <= {GATE_TASK.max_exposed_p95:,})")
    if false > GATE_TASK.max_false_rollbacks:
        problems.append(f"the equally good model was rolled back in {false:.0%} of the rollouts "
                        f"(target <= {GATE_TASK.max_false_rollbacks:.0%})")
    if problems:
        fail("; ".join(problems) + ".",
             "a good model fails the gate too while it has fewer than min_samples labels (412 counts "
             "as a failed check), so min_samples must be reachable within threshold intervals at the "
             "first step's weight; min_accuracy between the two accuracies (90 % and 85 %) separates "
             "them once there are enough labels; each step that passes sends more users to the canary.")
    passed(f"gates: the worse model rolled back in >= {GATE_TASK.min_caught:.0%} of "
           f"{GATE_TASK.rollouts} seeded rollouts, before {GATE_TASK.max_exposed_p95:,} requests (p95); "
           f"the good one kept in >= {1 - GATE_TASK.max_false_rollbacks:.0%}")


# --- Exercise 2: the sample size of an A/B test ----------------------------------------------

SAMPLE_SIZE_CASES = ((0.96, 0.95, 0.05, 0.8), (0.90, 0.85, 0.05, 0.8), (0.976, 0.961, 0.05, 0.9),
                     (0.5, 0.6, 0.01, 0.8))
"""(accuracy A, accuracy B, alpha, power) the check tries."""


def check_sample_size(needed: object) -> None:
    """`needed(p_a, p_b, alpha, power)` -> labelled predictions per arm (within 1 %)."""
    if _unanswered(needed):
        raise NotAnsweredError("needed: no answer yet.\nHINT: write the function.")
    if not callable(needed):
        fail("needed should be a function of (p_a, p_b, alpha, power).",
             "def needed(p_a, p_b, alpha=0.05, power=0.8): ...")
    function: Callable[..., object] = needed
    for p_a, p_b, alpha, power in SAMPLE_SIZE_CASES:
        expected = sample_size_per_arm(p_a, p_b, alpha=alpha, power=power)
        try:
            got = function(p_a, p_b, alpha, power)
        except Exception as exc:  # noqa: BLE001 - the student's function: report, do not crash
            fail(f"needed({p_a}, {p_b}, {alpha}, {power}) raised {type(exc).__name__}: {exc}",
                 "use scipy.stats.norm.isf for the z values.")
        if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(got)):
            fail(f"needed({p_a}, {p_b}, {alpha}, {power}) returned {got!r}, not a number.",
                 "return the number of labelled predictions per arm.")
        if not math.isclose(float(got), expected, rel_tol=0.01, abs_tol=1):
            direction = "too high" if float(got) > expected else "too low"
            fail(f"needed({p_a}, {p_b}, {alpha}, {power}) = {float(got):,.0f} is {direction}.",
                 "two-sided: z for alpha/2; power: z for (1 - power); the variance under 'no "
                 "difference' uses the mean accuracy, the one under the alternative each arm's own; "
                 "divide by the squared difference and round up.")
    passed(f"needed() agrees with the two-proportion sample-size formula in all {len(SAMPLE_SIZE_CASES)} cases")


# --- Exercise 3: decide three A/B tests ------------------------------------------------------

AB_CASES: dict[str, tuple[int, int, int, int]] = {
    "shop": (4_610, 4_800, 4_752, 4_900),
    "news": (1_441, 1_500, 1_452, 1_500),
    "bank": (9_380, 10_000, 9_210, 10_000),
}
"""Test -> (correct A, labelled A, correct B, labelled B); A is the current model."""
DECISIONS = ("ship B", "keep A", "keep testing")
ALPHA = 0.05


def ab_decisions() -> dict[str, str]:
    """The decision per test: a two-sided z-test at ALPHA; significant -> the better one."""
    out = {}
    for name, (ca, na, cb, nb) in AB_CASES.items():
        result = two_proportion_z_test(ca, na, cb, nb)
        out[name] = ("ship B" if result.difference > 0 else "keep A") if result.significant(ALPHA) \
            else "keep testing"
    return out


def check_ab_decisions(decisions: object) -> None:
    check_choices("decisions", decisions, ab_decisions(),
                  hint="for each test, a two-sided two-proportion z-test at alpha 0.05: only a "
                       "significant difference decides, and its sign says which model.")
