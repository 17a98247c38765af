"""Deciding an A/B test of two model versions from labelled predictions (pure statistics).

Each labelled prediction is a Bernoulli trial (correct or not), so comparing two versions'
accuracies is comparing two proportions. Three tools, the ones an A/B test needs:

* `two_proportion_z_test`: the pooled two-proportion z-test (normal approximation), two-sided:
  is B's accuracy different from A's? Valid when each arm has at least ~10 correct and
  ~10 wrong answers.
* `bootstrap_difference`: a percentile bootstrap interval for accuracy(B) - accuracy(A),
  resampling each arm's 0/1 outcomes with replacement (seeded, so reproducible); it needs no
  normal approximation.
* `sample_size_per_arm`: how many labelled predictions each arm needs to detect a given
  difference with a given significance and power (the standard formula for two proportions,
  e.g. Fleiss, *Statistical Methods for Rates and Proportions*, eq. 4.14 without continuity
  correction).

Rows of one request are not independent when a user sends similar inputs; treating each row as
a trial, as here, is the usual simplification (say so when you report a p-value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["BootstrapInterval", "ZTest", "bootstrap_difference", "sample_size_per_arm",
           "two_proportion_z_test"]


@dataclass(frozen=True)
class ZTest:
    accuracy_a: float
    accuracy_b: float
    difference: float
    """accuracy_b - accuracy_a."""
    z: float
    p_value: float
    """Two-sided."""

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


@dataclass(frozen=True)
class BootstrapInterval:
    difference: float
    """The observed accuracy(B) - accuracy(A)."""
    low: float
    high: float
    confidence: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _check_counts(name: str, correct: int, total: int) -> None:
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total <= 0:
        raise ValueError(f"{name}: total must be a positive integer, got {total!r}")
    if isinstance(correct, bool) or not isinstance(correct, (int, np.integer)) or not 0 <= correct <= total:
        raise ValueError(f"{name}: correct must be an integer within 0..{total}, got {correct!r}")


def two_proportion_z_test(correct_a: int, total_a: int, correct_b: int, total_b: int) -> ZTest:
    """Pooled two-proportion z-test of accuracy A vs B (two-sided)."""
    _check_counts("A", correct_a, total_a)
    _check_counts("B", correct_b, total_b)
    pa, pb = correct_a / total_a, correct_b / total_b
    pooled = (correct_a + correct_b) / (total_a + total_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / total_a + 1 / total_b))
    if se == 0:  # both arms all right or all wrong: no evidence of a difference
        return ZTest(pa, pb, pb - pa, 0.0, 1.0)
    z = (pb - pa) / se
    return ZTest(pa, pb, pb - pa, z, float(2 * norm.sf(abs(z))))


def bootstrap_difference(outcomes_a: Sequence[int] | np.ndarray, outcomes_b: Sequence[int] | np.ndarray,
                         *, confidence: float = 0.95, resamples: int = 10_000,
                         seed: int = 0) -> BootstrapInterval:
    """Percentile bootstrap interval of mean(B) - mean(A) for two arrays of 0/1 outcomes."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence!r}")
    if resamples < 100:
        raise ValueError(f"resamples: at least 100 for a usable interval, got {resamples}")
    arms = []
    for name, outcomes in (("A", outcomes_a), ("B", outcomes_b)):
        array = np.asarray(outcomes)
        if array.ndim != 1 or array.size == 0 or not np.isin(array, (0, 1)).all():
            raise ValueError(f"outcomes {name}: expected a non-empty 1-d sequence of 0/1, got shape "
                             f"{array.shape}")
        arms.append(array.astype(np.int64))
    a, b = arms
    rng = np.random.default_rng(seed)
    # a resample's mean = (successes drawn) / n: drawing the success count from a binomial is the
    # same distribution as resampling n 0/1 outcomes, and costs one call per arm
    means_a = rng.binomial(a.size, a.mean(), resamples) / a.size
    means_b = rng.binomial(b.size, b.mean(), resamples) / b.size
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means_b - means_a, [tail, 100 - tail])
    return BootstrapInterval(float(b.mean() - a.mean()), float(low), float(high), confidence)


def sample_size_per_arm(accuracy_a: float, accuracy_b: float, *, alpha: float = 0.05,
                        power: float = 0.8) -> int:
    """Labelled predictions per arm for a two-sided test at `alpha` to detect accuracy_a vs
    accuracy_b with probability `power`."""
    for name, p in (("accuracy_a", accuracy_a), ("accuracy_b", accuracy_b)):
        if not 0 < p < 1:
            raise ValueError(f"{name} must be within (0, 1), got {p!r}")
    if accuracy_a == accuracy_b:
        raise ValueError("accuracy_a == accuracy_b: no sample size detects a zero difference")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be within (0, 1), got {alpha!r}, {power!r}")
    mean = (accuracy_a + accuracy_b) / 2
    z_alpha, z_power = norm.isf(alpha / 2), norm.isf(1 - power)
    spread = (z_alpha * math.sqrt(2 * mean * (1 - mean))
              + z_power * math.sqrt(accuracy_a * (1 - accuracy_a) + accuracy_b * (1 - accuracy_b)))
    return math.ceil(spread ** 2 / (accuracy_a - accuracy_b) ** 2)
