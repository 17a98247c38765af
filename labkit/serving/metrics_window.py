"""Time-bucketed metric windows, as Knative's autoscaler averages concurrency and RPS.

The KPA does not look at single samples: every second a revision-wide total is recorded into
1-second buckets, and each 2-second decision reads two averages of those buckets, one over the
stable window (60 s by default) and one over the panic window (10 % of it). How that average
treats a window that has not filled yet, a silence after the last sample, or a late sample
decides when a revision scales to zero, so it is reproduced here exactly:

- `LinearWindow`: Knative's default (``TimedFloat64Buckets``). A partial window averages only
  the buckets written so far (one sample of 1 averages to 1, not 1/60); gaps between samples
  count as 0; silence after the last sample shrinks the denominator; the result is cut down
  (floor, not round) to 6 decimals.
- `WeightedWindow`: the ``weighted-exponential`` algorithm (``WeightedFloat64Buckets``).
- `MaxWindow`: the running maximum used by the decider's scale-down delay (``max.TimeWindow``).
- `RevisionMetrics`: the four windows Knative's collector keeps per revision.
- `scrape_sample_size`: how many pods the scraper samples out of N ready pods.

Time is a float number of seconds given by the caller (a wall clock or a simulated one): these
classes never read a clock. Bucket ``k`` holds samples with ``k <= t / granularity < k + 1``.

Followed: knative/serving ``pkg/autoscaler/aggregation/bucketing.go``,
``pkg/autoscaler/aggregation/max/{timewindow,window}.go``,
``pkg/autoscaler/metrics/{collector,sample_size}.go`` (the reference note
/work/shared/reference/knative-kpa.md was written at commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944; the stored sources read for this port were the
bucketing.go and test versions that carry ``roundToNDigits``, ``ResizeWindow`` and the weighted
buckets). Own code, no Knative text copied.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

__all__ = [
    "BUCKET_SECONDS",
    "DELAY_GRANULARITY_SECONDS",
    "LinearWindow",
    "MaxWindow",
    "NoData",
    "RevisionMetrics",
    "WeightedWindow",
    "floor_to_digits",
    "scrape_sample_size",
    "smoothing_coefficient",
]

BUCKET_SECONDS = 1.0
"""Knative's ``BucketSize``: the collector aggregates into 1-second buckets."""

DELAY_GRANULARITY_SECONDS = 2.0
"""The decider's tick; the scale-down-delay window keeps one maximum per tick."""

_PRECISION_DIGITS = 6
_MIN_SMOOTHING = 0.2
_WEIGHT_PRECISION = 0.9999
_SAMPLE_CONSTANT = 1.96 * 1.96 * 100 / (5 * 5)  # z(95%)^2 * variance / margin^2 = 15.3664

Algorithm = Literal["linear", "weighted-exponential"]


class NoData(LookupError):
    """No sample reached the stable window for a whole window: Knative's ``ErrNoData``.

    The decider then produces no decision (an invalid result) instead of scaling on zeros.
    """


def floor_to_digits(value: float, digits: int) -> float:
    """Cut `value` down to `digits` decimals, as Knative's ``roundToNDigits`` does.

    It is a floor, not a rounding: 1.2345 -> 1.234 with 3 digits. This matters at the tail of
    a scale-down, where a tiny positive average (3.6e-17) must become exactly 0 so that the
    decider can want zero pods.
    """
    scale = 10.0**digits
    return math.floor(value * scale) / scale


def _check_window(window: float, granularity: float) -> int:
    if not granularity > 0:
        raise ValueError(f"granularity must be > 0 seconds, got {granularity!r}")
    if not window >= granularity:
        raise ValueError(
            f"window must be at least the granularity ({granularity} s), got {window!r} s"
        )
    return math.ceil(window / granularity)


class LinearWindow:
    """Sum of samples per time bucket; average over the part of the window that has data.

    Knative's ``TimedFloat64Buckets``: a ring of ``ceil(window / granularity)`` buckets, with
    the bucket of the first and of the last write remembered, so that a window that is not full
    yet (a new revision, or the first samples after a long silence) is averaged over the
    buckets it really covers.
    """

    def __init__(self, window: float, granularity: float = BUCKET_SECONDS) -> None:
        self._buckets = [0.0] * _check_window(window, granularity)
        self._window = float(window)
        self._granularity = float(granularity)
        self._first: int | None = None  # bucket index of the first write still counted
        self._last: int | None = None  # bucket index of the latest write
        self._total = 0.0  # sum of every bucket in the ring

    @property
    def window(self) -> float:
        """The window length in seconds."""
        return self._window

    def _index(self, t: float) -> int:
        return math.floor(t / self._granularity)

    def _start(self, index: int) -> float:
        return index * self._granularity

    def is_empty(self, now: float) -> bool:
        """True when nothing was written during the last `window` seconds before `now`."""
        if self._last is None:
            return True
        return self._start(self._index(now)) - self._start(self._last) > self._window

    def record(self, t: float, value: float) -> None:
        """Add `value` to the bucket of time `t`.

        A sample older than a window before the latest write is dropped. A sample after a
        silence of a whole window restarts the window; a shorter gap is filled with zeros.
        """
        index = self._index(t)
        size = len(self._buckets)
        if self._last is None:
            self._restart(index)
        elif index != self._last:
            if not self._start(index) + self._window > self._start(self._last):
                return  # a window or more before the latest write: too old to count
            if self._first is None or index < self._first:
                self._first = index
            if index > self._last:
                if self._start(index) - self._start(self._last) >= self._window:
                    self._restart(index)
                else:
                    # Zero the ring slots between the last write and this one: they hold
                    # samples from a window ago that would otherwise be counted again.
                    for i in range(self._last + 1, index + 1):
                        self._total -= self._buckets[i % size]
                        self._buckets[i % size] = 0.0
                    self._last = index
        self._buckets[index % size] += value
        self._total += value

    def _restart(self, index: int) -> None:
        self._buckets = [0.0] * len(self._buckets)
        self._total = 0.0
        self._first = index
        self._last = index

    def _covered_buckets(self) -> int:
        assert self._first is not None and self._last is not None
        return self._last - self._first + 1

    def average(self, now: float) -> float:
        """The window average at `now` (0 when the window holds no data)."""
        if self._last is None:
            return 0.0
        now_index = self._index(now)
        gap = self._start(now_index) - self._start(self._last)
        if gap <= 0:
            count = min(self._covered_buckets(), len(self._buckets))
            return floor_to_digits(self._total / count, _PRECISION_DIGITS)
        if gap < self._window:
            total = self._total
            for i in range(self._last + 1, now_index + 1):
                total -= self._buckets[i % len(self._buckets)]
            skipped = now_index - self._last
            count = min(self._covered_buckets(), len(self._buckets) - skipped)
            return floor_to_digits(total / count, _PRECISION_DIGITS)
        return 0.0

    def buckets(self, now: float) -> list[tuple[float, float]]:
        """(bucket start time, value) of the buckets still inside the window at `now`, newest
        first; buckets never written hold 0. A view for tests and plots.
        """
        if self._last is None:
            return []
        count = len(self._buckets) - (self._index(now) - self._last)
        return [
            (self._start(self._last - i), self._buckets[(self._last - i) % len(self._buckets)])
            for i in range(count)
        ]

    def resize(self, window: float, now: float) -> None:
        """Change the window length, keeping the newest buckets that still fit.

        Knative resizes when a revision's ``window`` annotation changes. It decides whether
        the old data is still current with the wall clock; here the caller passes `now`.
        """
        if window == self._window:
            return
        size = _check_window(window, self._granularity)
        new_buckets = [0.0] * size
        new_total = 0.0
        if self._last is not None and not self.is_empty(now):
            old_size = len(self._buckets)
            index = self._last
            for _ in range(min(size, old_size)):
                new_buckets[index % size] = self._buckets[index % old_size]
                new_total += self._buckets[index % old_size]
                index -= 1
            self._first = self._last - (old_size - 1)
        else:
            self._first = None
            self._last = None
        self._window = float(window)
        self._buckets = new_buckets
        self._total = new_total


def smoothing_coefficient(buckets: int) -> float:
    """The weight of the newest bucket in the weighted-exponential average.

    Chosen so that the weights of `buckets` buckets add up to 99.99 %, but never below 0.2
    (else a long window would decay so slowly it becomes a plain average).
    """
    return max(1 - (1 - _WEIGHT_PRECISION) ** (1 / buckets), _MIN_SMOOTHING)


class WeightedWindow(LinearWindow):
    """Exponentially weighted buckets: recent seconds count more than old ones.

    Knative's ``WeightedFloat64Buckets`` (annotation ``metric-aggregation-algorithm:
    weighted-exponential``). The newest bucket weighs ``m``, the one before ``m(1-m)``, and so
    on; silence since the last write counts as zero-valued buckets. Not cut to 6 decimals.
    """

    def __init__(self, window: float, granularity: float = BUCKET_SECONDS) -> None:
        super().__init__(window, granularity)
        self._smoothing = smoothing_coefficient(len(self._buckets))

    @property
    def smoothing(self) -> float:
        """The coefficient ``m`` in use."""
        return self._smoothing

    def average(self, now: float) -> float:
        """The weighted average at `now` (0 when the window holds no data)."""
        if self.is_empty(now):
            return 0.0
        assert self._last is not None
        size = len(self._buckets)
        weight = self._smoothing
        count = size
        silent = self._index(now) - self._last
        if silent > 0:
            weight *= (1 - self._smoothing) ** silent
            count -= silent
        result = 0.0
        for i in range(count):
            result += self._buckets[(self._last - i) % size] * weight
            weight *= 1 - self._smoothing
        return result

    def resize(self, window: float, now: float) -> None:
        """Change the window length and recompute the smoothing coefficient."""
        super().resize(window, now)
        self._smoothing = smoothing_coefficient(len(self._buckets))


class MaxWindow:
    """The maximum value recorded during the last `duration` seconds, in ticks of 2 s.

    Knative's ``max.TimeWindow``, used for ``scale-down-delay``: the decider records its
    decision every tick and applies the largest one of the delay, so a scale-up acts at once
    while a scale-down waits until the higher decisions have aged out. Two records in the same
    tick keep the larger value. Kept as a descending list of (tick, value) maxima.
    """

    def __init__(self, duration: float, granularity: float = DELAY_GRANULARITY_SECONDS) -> None:
        if not duration > 0:
            raise ValueError(f"scale-down delay window must be > 0 seconds, got {duration!r}")
        if not granularity > 0:
            raise ValueError(f"granularity must be > 0 seconds, got {granularity!r}")
        self._size = math.ceil(duration / granularity)
        self._granularity = float(granularity)
        self._maxima: deque[tuple[int, float]] = deque()

    def record(self, t: float, value: float) -> None:
        """Record `value` at time `t`."""
        tick = math.floor(t / self._granularity)
        # An older value no larger than this one can never be the maximum again.
        while self._maxima and not value < self._maxima[-1][1]:
            self._maxima.pop()
        while self._maxima and tick - self._maxima[0][0] >= self._size:
            self._maxima.popleft()
        if self._maxima and self._maxima[-1][0] == tick:
            value = max(value, self._maxima.pop()[1])
        self._maxima.append((tick, value))

    def current(self) -> float:
        """The maximum over the window as of the latest record (0 before any record)."""
        return self._maxima[0][1] if self._maxima else 0.0


def scrape_sample_size(ready_pods: int) -> int:
    """How many of `ready_pods` pods Knative's scraper samples each second.

    All of them up to 3; beyond, the sample size for a 95 % confidence and 5 % margin of the
    population mean: 5 -> 4, 10 -> 7, 100 -> 14, 1000 -> 16. The scraper then scales the
    sampled mean up to a revision-wide total.
    """
    if ready_pods < 0:
        raise ValueError(f"ready_pods must be >= 0, got {ready_pods!r}")
    if ready_pods <= 3:
        return ready_pods
    return math.ceil(ready_pods * _SAMPLE_CONSTANT / (_SAMPLE_CONSTANT + ready_pods - 1))


class RevisionMetrics:
    """The metric windows Knative's collector keeps for one revision.

    Four windows: stable and panic, for concurrency and for RPS. `record` takes the
    revision-wide totals of one second (what the scraper or the activator reports, with
    requests the activator proxied already taken out); `stable_and_panic` gives the two
    averages the decider scales on.
    """

    def __init__(
        self,
        stable_window: float,
        panic_window: float,
        algorithm: Algorithm = "linear",
        has_scrape_target: bool = True,
    ) -> None:
        if algorithm == "linear":
            kind: type[LinearWindow] = LinearWindow
        elif algorithm == "weighted-exponential":
            kind = WeightedWindow
        else:
            raise ValueError(
                f"algorithm must be 'linear' or 'weighted-exponential', got {algorithm!r}"
            )
        self.algorithm = algorithm
        # With target-burst-capacity -1 no pod is scraped: only the activator reports, so an
        # empty window means "no traffic" rather than "no data yet".
        self.has_scrape_target = has_scrape_target
        self._windows = {
            ("concurrency", "stable"): kind(stable_window),
            ("concurrency", "panic"): kind(panic_window),
            ("rps", "stable"): kind(stable_window),
            ("rps", "panic"): kind(panic_window),
        }

    def record(self, t: float, concurrency: float, rps: float) -> None:
        """Record one revision-wide sample taken at time `t`."""
        for (metric, _), window in self._windows.items():
            window.record(t, concurrency if metric == "concurrency" else rps)

    def stable_and_panic(self, now: float, metric: str = "concurrency") -> tuple[float, float]:
        """(stable average, panic average) of `metric` at `now`.

        Raises `NoData` when the stable window saw no sample for a whole window and pods are
        scraped: the decider must then make no decision.
        """
        if metric not in ("concurrency", "rps"):
            raise ValueError(f"metric must be 'concurrency' or 'rps', got {metric!r}")
        stable = self._windows[(metric, "stable")]
        if stable.is_empty(now) and self.has_scrape_target:
            raise NoData(f"no {metric} sample in the last {stable.window:g} s")
        return stable.average(now), self._windows[(metric, "panic")].average(now)

    def resize(self, stable_window: float, panic_window: float, now: float) -> None:
        """Apply new window lengths (a changed ``window`` annotation)."""
        for (_, which), window in self._windows.items():
            window.resize(stable_window if which == "stable" else panic_window, now)
