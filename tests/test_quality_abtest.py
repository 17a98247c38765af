"""A/B statistics: the z-test agrees with the chi-squared test, the bootstrap with the normal
interval, and the sample size gives the power it promises (checked by seeded simulation)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from labkit.quality.abtest import bootstrap_difference, sample_size_per_arm, two_proportion_z_test


def test_z_test_is_the_square_root_of_the_uncorrected_chi_squared_test() -> None:
    result = two_proportion_z_test(900, 1000, 930, 1000)
    chi2, p, _, _ = chi2_contingency([[900, 100], [930, 70]], correction=False)
    assert result.difference == pytest.approx(0.03)
    assert result.z ** 2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(p)
    assert result.z > 0 and result.significant(0.05)
    assert not two_proportion_z_test(90, 100, 93, 100).significant(0.05)  # same rates, 10x fewer


def test_z_test_of_identical_perfect_arms_finds_nothing() -> None:
    result = two_proportion_z_test(50, 50, 80, 80)
    assert (result.z, result.p_value) == (0.0, 1.0)


@pytest.mark.parametrize("args, message", [
    ((5, 0, 5, 10), "A: total must be a positive integer"),
    ((11, 10, 5, 10), r"A: correct must be an integer within 0..10"),
    ((5, 10, 5.5, 10), "B: correct"),
])
def test_z_test_refuses_impossible_counts(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        two_proportion_z_test(*args)


def test_bootstrap_interval_matches_the_normal_interval_for_large_arms() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(4000) < 0.90, rng.random(4000) < 0.93
    interval = bootstrap_difference(a.astype(int), b.astype(int), seed=1)
    pa, pb = a.mean(), b.mean()
    se = math.sqrt(pa * (1 - pa) / a.size + pb * (1 - pb) / b.size)
    assert interval.difference == pytest.approx(pb - pa)
    assert interval.low == pytest.approx(pb - pa - 1.96 * se, abs=0.002)
    assert interval.high == pytest.approx(pb - pa + 1.96 * se, abs=0.002)
    assert interval.excludes_zero()
    again = bootstrap_difference(a.astype(int), b.astype(int), seed=1)
    assert again == interval  # seeded


def test_bootstrap_refuses_non_binary_outcomes() -> None:
    with pytest.raises(ValueError, match="outcomes B: expected a non-empty 1-d sequence of 0/1"):
        bootstrap_difference([1, 0, 1], [0.5, 1])  # type: ignore[list-item]  # the wrong type is the test
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_difference([1, 0], [1, 0], confidence=95)


def test_sample_size_matches_the_textbook_value() -> None:
    # 50 % vs 60 %, alpha 0.05 two-sided, power 0.8: 388 per arm (no continuity correction)
    assert sample_size_per_arm(0.5, 0.6) == 388
    assert sample_size_per_arm(0.6, 0.5) == 388
    assert sample_size_per_arm(0.96, 0.91) > sample_size_per_arm(0.96, 0.86)  # smaller gap, more samples
    with pytest.raises(ValueError, match="zero difference"):
        sample_size_per_arm(0.9, 0.9)
    with pytest.raises(ValueError, match="accuracy_b must be within"):
        sample_size_per_arm(0.9, 1.0)


def test_sample_size_gives_the_promised_power() -> None:
    """Simulate 2,000 seeded A/B tests of that size: about 80 % find the difference."""
    pa, pb = 0.96, 0.93
    n = sample_size_per_arm(pa, pb)
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(2000):
        result = two_proportion_z_test(int(rng.binomial(n, pa)), n, int(rng.binomial(n, pb)), n)
        found += result.significant(0.05)
    assert 0.76 <= found / 2000 <= 0.84
