"""Metric windows against the cases of Knative's own unit tests.

Ported (own code, same inputs and expected outputs) from knative/serving:
- ``pkg/autoscaler/aggregation/bucketing_test.go``: simple bucketing, many reps (in and out
  of order), window average (partial windows, holes, late and too-old writes), descending
  records, holes, window resizing (1 s and 3 s granularity, no-op), ``roundToNDigits``, the
  smoothing coefficient and the weighted average and its resize;
- ``pkg/autoscaler/aggregation/max/{window_test,timewindow_test}.go``: every row;
- ``pkg/autoscaler/metrics/sample_size.go`` values given in the reference note
  /work/shared/reference/knative-kpa.md (commit 98e5ef90aa7033797aa0a61ef97f3ff7e49a3944),
  and the note's section 4 on partial windows and the decay to zero.
Times start at an unaligned instant, as Knative's tests start at ``time.Now()``.
"""

from __future__ import annotations

import math

import pytest

from labkit.serving.metrics_window import (
    LinearWindow,
    MaxWindow,
    NoData,
    RevisionMetrics,
    WeightedWindow,
    floor_to_digits,
    scrape_sample_size,
    smoothing_coefficient,
)

NOW = 1_700_000_123.4  # an instant in the middle of a bucket


def nonzero(window: LinearWindow, now: float) -> dict[float, float]:
    return {t: v for t, v in window.buckets(now) if v}


def total(window: LinearWindow, now: float) -> float:
    return sum(v for _, v in window.buckets(now))


@pytest.mark.parametrize("granularity,records,want", [
    (1.0, [(0, 1.0), (0.1, 10.0), (1, 1.0), (3, 1.0)], {0: 11.0, 1: 1.0, 3: 1.0}),
    (5.0, [(0, 1.0), (3, 11.0), (6, 1.0)], {0: 12.0, 5: 1.0}),
    (1.0, [], {}),
])
def test_simple_bucketing(granularity, records, want):
    start = math.floor(NOW / granularity) * granularity
    window = LinearWindow(120, granularity)
    assert window.is_empty(start)
    for t, value in records:
        window.record(start + t, value)
    assert nonzero(window, start + 60) == {start + t: v for t, v in want.items()}


@pytest.mark.parametrize("order", [[1, 2, 3, 4, 5], [0, 3, 2, 1, 4]])
def test_many_reps_in_any_order_sum_up(order):
    window = LinearWindow(60)
    for p, offset in enumerate(order):
        for t in range(5):
            window.record(NOW + offset, p + t)
    assert total(window, NOW + max(order)) == 100


def test_window_average():
    w = LinearWindow(5)
    w.record(NOW, 1)
    assert w.average(NOW) == 1  # a partial window: not 1/5
    for i in range(1, 5):
        w.record(NOW + i, i + 1)
    assert w.average(NOW + 4) == 15 / 5
    assert w.average(NOW + 3.6) == 15 / 5  # `now` lagging behind the last write
    assert w.average(NOW + 6) == (15 - 1 - 2) / (5 - 2)  # short silence: fewer buckets
    assert w.average(NOW + 10) == 0  # silence longer than the window
    w.record(NOW + 6, 91)
    assert w.average(NOW + 6) == (15 - 1 - 2 + 91) / 5
    later = NOW + 60
    w.record(later, 1984)  # after a whole silent window: start again
    assert w.average(later) == 1984
    w.record(later - 3, 4)  # a late write inside the window counts and widens it
    assert w.average(later) == (4 + 1984) / 4
    later += 1
    w.record(later, 5)
    assert w.average(later) == (4 + 1984 + 5) / 5
    w.record(later - 3, 10)
    assert w.average(later) == (4 + 10 + 1984 + 5) / 5
    w.record(later - 6, 10)  # older than the window: ignored
    assert w.average(later) == (4 + 10 + 1984 + 5) / 5
    w.record(later - 5, 10)  # exactly a window before the last write: ignored too
    assert w.average(later) == (4 + 10 + 1984 + 5) / 5
    w.record(later + 5, 10)  # exactly a window of silence: the window restarts
    assert w.average(later + 5) == 10


def test_descending_records():
    w = LinearWindow(5)
    for i in range(8, -1, -1):
        w.record(NOW + i, 5)
    assert w.average(NOW + 5) == 5  # the writes older than the window were dropped


def test_holes_are_zeroed():
    w = LinearWindow(5)
    for i in range(5):
        w.record(NOW + i, i + 1)
    assert total(w, NOW + 4) == 15
    assert w.average(NOW + 4) == 3
    w.record(NOW + 8, 2)  # seconds 5..7 are zeroed; of the old ones only second 4 (5) stays
    assert total(w, NOW + 8) == 7


def test_resize_window():
    start = NOW
    w = LinearWindow(5)
    for i in range(6):
        w.record(start + i, i + 1)
    now = start + 5
    initial = 2 + 3 + 4 + 5 + 6
    assert total(w, now) == initial
    assert w.average(now) == initial / 5
    w.resize(10, now)
    assert w.window == 10 and len(w.buckets(now)) == 10
    assert total(w, now) == initial
    assert w.average(now) == initial / 5  # at most 5 buckets of data are known
    now += 1
    w.record(now, 7)
    assert total(w, now) == initial + 7
    assert w.average(now) == floor_to_digits((initial + 7) / 6, 6)
    w.resize(4, now)
    assert len(w.buckets(now)) == 4
    assert total(w, now) == initial + 7 - 2 - 3
    assert w.average(now) == (initial + 7 - 2 - 3) / 4
    before = w.buckets(now)
    w.resize(4, now)  # same window: nothing changes
    assert w.buckets(now) == before


def test_resize_window_3s_granularity():
    start = math.floor(NOW / 3) * 3
    w = LinearWindow(5, 3)
    assert len(w.buckets(start)) == 0
    for i, value in enumerate([10, 2, 3, 4, 5, 6, 7]):
        w.record(start + i, value)  # the last one overwrites the first bucket (10+2+3)
    want = (4 + 5 + 6) + 7
    assert len(w.buckets(start + 6)) == 2
    assert total(w, start + 6) == want
    w.resize(10, start + 6)
    assert len(w.buckets(start + 6)) == 4
    assert total(w, start + 6) == want
    w.record(start + 9.3, 42)
    assert total(w, start + 9) == want + 42
    w.resize(4, start + 9)
    assert len(w.buckets(start + 9)) == 2
    assert total(w, start + 9) == 42 + 7


def test_resize_after_silence_forgets_the_data():
    w = LinearWindow(5)
    w.record(NOW - 60, 19.82)
    w.resize(10, NOW)
    assert w.buckets(NOW) == [] and w.average(NOW) == 0
    w.record(NOW, 3)
    assert w.average(NOW) == 3


@pytest.mark.parametrize("digits,value,want", [
    (6, 3.6e-17, 0.0), (3, 0.0004, 0.0), (3, 1.2345, 1.234), (4, 1.2345, 1.2345),
    (6, 12345, 12345.0), (3, 1.2346, 1.234), (6, 0.9999999, 0.999999),  # a floor, not a round
])
def test_floor_to_digits(digits, value, want):
    assert floor_to_digits(value, digits) == want


@pytest.mark.parametrize("buckets,want", [(100, 0.2), (60, 0.2), (40, 0.20567), (6, 0.78456),
                                          (5, 0.84151)])
def test_smoothing_coefficient(buckets, want):
    assert smoothing_coefficient(buckets) == pytest.approx(want, abs=1e-5)


def test_weighted_average():
    w = WeightedWindow(5)
    m = w.smoothing
    w.record(NOW, 2)
    want = 2 * m
    assert w.average(NOW) == want
    want *= 1 - m  # a silent second decays the average
    assert w.average(NOW + 1) == want
    w.record(NOW + 1, 2)
    want += 2 * m
    assert w.average(NOW + 1) == pytest.approx(want, rel=1e-15)
    for i in range(5):
        w.record(NOW + 2 + i, i + 2)
    want = sum(v * m * (1 - m) ** k for k, v in enumerate([6, 5, 4, 3, 2]))
    assert w.average(NOW + 6) == pytest.approx(want, rel=1e-15)
    assert w.average(NOW + 16) == 0


def test_weighted_resize():
    w = WeightedWindow(5)
    assert w.smoothing == smoothing_coefficient(5)
    for i in range(6):
        w.record(NOW + i, i + 1)
    now = NOW + 5
    assert total(w, now) == 2 + 3 + 4 + 5 + 6
    assert round(w.average(now), 3) == 5.812  # the hand-computed value of the ported test
    w.resize(10, now)
    assert len(w.buckets(now)) == 10
    assert w.smoothing == smoothing_coefficient(10)


def test_weighted_differs_from_linear_by_order():
    newest_high, newest_low = WeightedWindow(4), WeightedWindow(4)
    for i, (a, b) in enumerate(zip([5, 5, 10, 10], [10, 10, 5, 5])):
        newest_high.record(NOW + i, a)
        newest_low.record(NOW + i, b)
    assert newest_high.average(NOW + 3) > 7.5 > newest_low.average(NOW + 3)


# --- max window (scale-down delay) ----------------------------------------------------------

MAX_ROWS = [
    ("single value", [1], None, [1]),
    ("ascending values", [1, 2], None, [1, 2]),
    ("descending values", [2, 1], None, [2, 2]),
    ("up, down, up", [1, 2, 1], None, [1, 2, 2]),
    ("windowing out", [5, 6, 5, 5, 5, 5, 5], None, [5, 6, 6, 6, 6, 6, 5]),
    ("windowing out with gaps", [6, 5, 2, 1], [0, 1, 2, 6], [6, 6, 6, 2]),
    ("windowing out 2", [5, 6, 5, 7, 5, 5, 1], None, [5, 6, 6, 7, 7, 7, 7]),
    ("windowing out 3", [5, 8, 5, 7, 5, 5], None, [5, 8, 8, 8, 8, 8]),
    ("windowing out 4", [5, 8, 5, 7, 5, 5, 1], None, [5, 8, 8, 8, 8, 8, 7]),
    ("windowing out 5", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4], None, [5, 8, 8, 8, 8, 8, 7, 7, 5, 5]),
    ("windowing out 6", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4], None,
     [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4]),
    ("windowing out 7", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9], None,
     [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9]),
    ("windowing out 8", [5, 8, 5, 7, 5, 5, 1, 4, 4, 4, 4, 9, 3, 4, 2, 1, 0], None,
     [5, 8, 8, 8, 8, 8, 7, 7, 5, 5, 4, 9, 9, 9, 9, 9, 4]),
    ("same index, ascending", [1, 2, 3, 4, 5, 6, 7], [1] * 7, [1, 2, 3, 4, 5, 6, 7]),
    ("same index, descending", [7, 6, 5, 4, 3, 2, 1], [1] * 7, [7] * 7),
]


@pytest.mark.parametrize("name,values,indexes,want", MAX_ROWS, ids=[r[0] for r in MAX_ROWS])
def test_max_window(name, values, indexes, want):
    window = MaxWindow(5, granularity=1)
    got = []
    for i, value in enumerate(values):
        window.record(float(indexes[i] if indexes else i), value)
        got.append(window.current())
    assert got == want


@pytest.mark.parametrize("records,want", [
    ([(0, 5)], 5),
    ([(0, 6), (0.5, 5)], 6),
    ([(0, 5), (1, 8)], 8),
    ([(0, 5), (6, 4)], 4),
])
def test_max_time_window(records, want):
    window = MaxWindow(5, granularity=1)
    for t, value in records:
        window.record(NOW + t, value)
    assert window.current() == want


# --- scraping and the collector ----------------------------------------------------------

@pytest.mark.parametrize("pods,want", [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 4), (10, 7),
                                       (100, 14), (1000, 16)])
def test_scrape_sample_size(pods, want):
    assert scrape_sample_size(pods) == want


def test_revision_metrics_no_data_until_a_sample():
    metrics = RevisionMetrics(60, 6)
    with pytest.raises(NoData, match="concurrency"):
        metrics.stable_and_panic(NOW)
    metrics.record(NOW, concurrency=12, rps=30)
    assert metrics.stable_and_panic(NOW) == (12, 12)
    assert metrics.stable_and_panic(NOW, "rps") == (30, 30)
    with pytest.raises(NoData):
        metrics.stable_and_panic(NOW + 61)


def test_revision_metrics_without_scrape_target_reads_zero():
    metrics = RevisionMetrics(60, 6, has_scrape_target=False)
    assert metrics.stable_and_panic(NOW) == (0, 0)


def test_stable_average_decays_linearly_then_reaches_zero():
    metrics = RevisionMetrics(60, 6)
    start = math.floor(NOW)
    for s in range(60):
        metrics.record(start + s, concurrency=1, rps=0)
    for s in range(60, 120):  # the scraper keeps writing zeros while pods exist
        metrics.record(start + s, concurrency=0, rps=0)
        stable, panic = metrics.stable_and_panic(start + s)
        assert stable == floor_to_digits((119 - s) / 60, 6)
        assert panic == floor_to_digits(max(0, 65 - s) / 6, 6)
    assert metrics.stable_and_panic(start + 119) == (0, 0)


def test_panic_window_reacts_before_stable():
    metrics = RevisionMetrics(60, 6)
    start = math.floor(NOW)
    for s in range(60):
        metrics.record(start + s, concurrency=10 if s < 54 else 100, rps=0)
    stable, panic = metrics.stable_and_panic(start + 59)
    assert panic == 100
    assert stable == (54 * 10 + 6 * 100) / 60


@pytest.mark.parametrize("args,match", [
    ((60, 6, "ewma"), "algorithm"), ((0.5, 6), "window"), ((60, 6, "linear", True), None),
])
def test_revision_metrics_arguments(args, match):
    if match is None:
        RevisionMetrics(*args)
    else:
        with pytest.raises(ValueError, match=match):
            RevisionMetrics(*args)


def test_weighted_collection():
    metrics = RevisionMetrics(60, 6, algorithm="weighted-exponential")
    metrics.record(NOW, 10, 0)
    stable, panic = metrics.stable_and_panic(NOW)
    assert stable == pytest.approx(10 * 0.2) and panic == pytest.approx(10 * smoothing_coefficient(6))
