"""The one percentile labkit reports from samples: linear interpolation between closest ranks.

That is Hyndman & Fan's definition 7, numpy's default (`numpy.percentile(a, q)`,
method="linear": https://numpy.org/doc/stable/reference/generated/numpy.percentile.html) and
pandas' and R's default too, so a student who checks a simulator's p99 with numpy on the same
samples gets the same number. The q-th percentile of n sorted samples sits at rank
``q / 100 * (n - 1)``; between two ranks it interpolates. No samples give NaN (a simulator
that served nothing has no latency), never an exception.

Not everything labkit shows is a percentile of samples: where labkit models Prometheus
(`histogram_quantile` over Envoy's buckets, in `labkit.sim.canary_traffic` and Flagger's
metrics) it keeps Prometheus's own in-bucket interpolation on purpose, because that is the
number Flagger would read.

Pure (numpy only): importable from policy, simulator and live code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labkit.params import ParameterError

__all__ = ["percentile", "percentiles"]


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float] | np.ndarray,
                weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The `qs`-th percentiles (each within 0..100) of `values`, by linear interpolation.

    `weights` are frequency weights, each >= 1: a sample of weight w stands for w observations
    (a subsample scaled back to the count it was drawn from). The percentile is then the one
    of the sample with every value repeated w times, so weights of 1 give numpy's answer and
    integer weights give numpy's answer on the repeated sample.
    """
    q = np.asarray(qs, dtype=float)
    bad = ~((q >= 0) & (q <= 100))
    if bad.any():
        raise ParameterError(f"q must be a number in the range [0, 100], got {q[bad].tolist()}")
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return np.full(q.shape, np.nan)
    if weights is None:
        return np.asarray(np.percentile(x, q), dtype=float)
    w = np.asarray(weights, dtype=float).ravel()
    if w.shape != x.shape:
        raise ParameterError(f"weights must have one weight per value ({x.size}), got {w.size}")
    if not (w >= 1).all() or not np.isfinite(w).all():
        raise ParameterError(f"weights must be finite frequency weights >= 1, got {w[~(w >= 1)][:3].tolist()}")
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    after = np.cumsum(w)
    before = after - w
    # Repeated w times, sample i fills ranks before_i .. after_i - 1 (a plateau); linear between.
    ranks = np.column_stack([before, after - 1]).ravel()
    return np.asarray(np.interp(q / 100 * (after[-1] - 1), ranks, np.repeat(x, 2)), dtype=float)


def percentile(values: Sequence[float] | np.ndarray, q: float,
               weights: Sequence[float] | np.ndarray | None = None) -> float:
    """The q-th percentile (0..100) of `values`; see `percentiles`. NaN for no values."""
    return float(percentiles(values, [q], weights)[0])
