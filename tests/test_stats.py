"""labkit.stats: the one percentile, and that labkit's reports use it rather than their own."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from labkit.params import ParameterError
from labkit.stats import percentile, percentiles

ROOT = Path(__file__).resolve().parent.parent / "labkit"


def test_linear_interpolation_between_closest_ranks() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0) == 1.0 and percentile([1.0, 5.0], 100) == 5.0


def test_matches_numpy_default_on_random_samples() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 101, 1000):
        x = rng.lognormal(0.0, 1.0, n)
        qs = [0, 1, 25, 50, 90, 99, 99.9, 100]
        np.testing.assert_allclose(percentiles(x, qs), np.percentile(x, qs), rtol=0, atol=0)
        assert percentile(x.tolist(), 99) == float(np.percentile(x, 99))


def test_no_values_give_nan_and_a_bad_q_is_named() -> None:
    assert math.isnan(percentile([], 50))
    assert np.isnan(percentiles(np.empty(0), [50, 99])).all()
    with pytest.raises(ParameterError, match=r"q must be a number in the range \[0, 100\], got \[101.0\]"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="q must be"):
        percentiles([1.0], [50, -1])


def test_integer_weights_are_repeated_samples() -> None:
    rng = np.random.default_rng(3)
    x = rng.exponential(1.0, 40)
    w = rng.integers(1, 6, 40)
    qs = [0, 10, 50, 95, 99, 100]
    np.testing.assert_allclose(percentiles(x, qs, w), np.percentile(np.repeat(x, w), qs))
    np.testing.assert_allclose(percentiles(x, qs, np.ones(40)), np.percentile(x, qs))


def test_fractional_weights_scale_a_subsample() -> None:
    # 3 cold samples standing for 30 requests beside 10 warm ones: the cold value is 75 % of the mass.
    values = [1.0] * 10 + [5.0] * 3
    weights = [1.0] * 10 + [10.0] * 3
    assert percentile(values, 20, weights) == 1.0
    assert percentile(values, 50, weights) == 5.0
    with pytest.raises(ValueError, match="weights must be finite frequency weights >= 1"):
        percentile([1.0, 2.0], 50, [0.5, 1.0])
    with pytest.raises(ValueError, match="one weight per value"):
        percentile([1.0, 2.0], 50, [1.0])


def _numpy_quantile_calls(source: str, name: str) -> list[str]:
    """Calls of numpy's own percentile/quantile/median in a module's source (np.x or numpy.x)."""
    return [f"{name}:{node.lineno}: np.{node.func.attr}" for node in ast.walk(ast.parse(source, name))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")
            and node.func.attr in ("percentile", "quantile", "median", "nanpercentile", "nanquantile")]


def test_simulators_and_reports_use_the_one_percentile() -> None:
    modules = [*sorted((ROOT / "sim").glob("*.py")), ROOT / "coldstart.py", ROOT / "load.py",
               *sorted((ROOT / "widgets").glob("*.py")), *sorted((ROOT / "grading").glob("lab*.py"))]
    assert [hit for m in modules for hit in _numpy_quantile_calls(m.read_text(), m.name)] == []


def test_the_guard_sees_numpy_percentiles() -> None:
    source = "import numpy as np\nx = np.percentile([1.0], 50)\ny = np.median([1.0])\nz = percentile([1.0], 5)\n"
    assert _numpy_quantile_calls(source, "m.py") == ["m.py:2: np.percentile", "m.py:3: np.median"]
