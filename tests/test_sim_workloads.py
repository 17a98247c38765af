"""Arrival processes: reproducible for a seed, with the rates and variability they promise."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from labkit.sim.workloads import (
    Bursty,
    Diurnal,
    Poisson,
    TraceReplay,
    as_generator,
    interarrival_cv,
)

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "data" / "traces" / "synthetic_trace.csv"

WORKLOADS = [
    Poisson(2.0),
    Bursty(5.0, 0.1, mean_high_duration=30.0, mean_low_duration=300.0),
    Bursty(4.0, mean_high_duration=20.0, mean_low_duration=100.0),
    Diurnal(1.0, 4.0, period=3600.0),
]


@pytest.mark.parametrize("workload", WORKLOADS, ids=repr)
def test_same_seed_same_arrivals_and_different_seed_different(workload) -> None:
    a = workload.arrival_times(7, 5000.0)
    b = workload.arrival_times(np.random.default_rng(7), 5000.0)
    c = workload.arrival_times(8, 5000.0)
    np.testing.assert_array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)


def test_random_random_seeds_work_and_are_reproducible() -> None:
    a = Poisson(1.0).arrival_times(random.Random(3), 1000.0)
    b = Poisson(1.0).arrival_times(random.Random(3), 1000.0)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="seed must be"):
        as_generator("seven")  # type: ignore[arg-type]  # the wrong type is the test


@pytest.mark.parametrize("workload", WORKLOADS, ids=repr)
def test_arrivals_are_sorted_inside_the_horizon_at_the_mean_rate(workload) -> None:
    horizon = 2e5
    times = workload.arrival_times(11, horizon)
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= 0 and times[-1] < horizon
    # wide margin: bursty processes have a large variance of counts
    assert times.size / horizon == pytest.approx(workload.mean_rate, rel=0.1)


def test_chunks_join_seamlessly_on_long_horizons() -> None:
    # 20 req/s over 1e4 s spans several chunks; the gaps must stay exponential with mean 1/20
    times = Poisson(20.0).arrival_times(1, 1e4)
    gaps = np.diff(times)
    assert gaps.min() > 0
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.02)


def test_poisson_cv_is_one() -> None:
    assert Poisson(3.0).measured_cv(5, 1e4) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("workload", [w for w in WORKLOADS if isinstance(w, Bursty)], ids=repr)
def test_bursty_cv_exceeds_one_in_theory_and_measured(workload) -> None:
    assert workload.cv > 1.5
    measured = workload.measured_cv(3, 3e5)
    assert measured > 1.5
    assert measured == pytest.approx(workload.cv, rel=0.15)


def test_bursty_theoretical_cv_tends_to_poisson_when_states_are_alike() -> None:
    assert Bursty(1.0, 0.999, mean_high_duration=10.0, mean_low_duration=10.0).cv == pytest.approx(1.0, abs=1e-3)


def test_diurnal_peak_and_trough_follow_the_ratio() -> None:
    w = Diurnal(2.0, 5.0, period=1000.0)
    assert w.rate_at(0.0) == pytest.approx(2.0 * (1 - w.amplitude))
    assert w.rate_at(500.0) / w.rate_at(0.0) == pytest.approx(5.0)
    times = w.arrival_times(2, 2e5)
    phase = np.mod(times, 1000.0)
    near_trough = np.count_nonzero((phase < 100) | (phase > 900))
    near_peak = np.count_nonzero(np.abs(phase - 500) < 100)
    assert 3.5 < near_peak / near_trough < 6.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Poisson(-1.0), r"Poisson rate must be a number in the range \(0, inf\), got -1.0"),
        (lambda: Poisson(float("nan")), r"Poisson rate must be a number in the range \(0, inf\), got nan"),
        (lambda: Bursty(1.0, 2.0), "low_rate .* must be below high_rate"),
        (lambda: Bursty(1.0, mean_high_duration=0.0), "mean_high_duration must be"),
        (lambda: Diurnal(1.0, 0.5), "peak_to_trough must be"),
        (lambda: TraceReplay([3.0, 1.0]), r"timestamp #1 \(1.0\) is earlier"),
        (lambda: TraceReplay([-1.0]), "finite and >= 0"),
        (lambda: TraceReplay([]), "no timestamps"),
    ],
)
def test_bad_parameters_are_named(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_trace_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("# a comment\ntimestamp\n0.5\n1.25,extra\n\nabc\n")
    with pytest.raises(ValueError, match=rf"{bad}:6: 'abc' is not a timestamp"):
        TraceReplay(bad)
    backwards = tmp_path / "backwards.csv"
    backwards.write_text("1.0\n0.5\n")
    with pytest.raises(ValueError, match=rf"{backwards}:2: timestamp 0.5 is earlier"):
        TraceReplay(backwards)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TraceReplay(tmp_path / "missing.csv")


def test_trace_replay_reads_comments_header_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("# synthetic\ntimestamp,function\n0.5,f\n# mid comment\n1.25,g\n4,f\n")
    w = TraceReplay(path)
    np.testing.assert_array_equal(w.arrival_times(0, 100.0), [0.5, 1.25, 4.0])
    np.testing.assert_array_equal(w.arrival_times(0, 2.0), [0.5, 1.25])
    assert w.duration == 5.0 and w.mean_rate == pytest.approx(3 / 5)


def test_trace_replay_loops_when_asked() -> None:
    w = TraceReplay([0.0, 1.0], loop=True, duration=3.0)
    np.testing.assert_array_equal(w.arrival_times(0, 7.0), [0.0, 1.0, 3.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="must exceed the last timestamp"):
        TraceReplay([0.0, 5.0], duration=5.0)


def test_shipped_trace_is_small_synthetic_and_bursty() -> None:
    assert TRACE.stat().st_size < 200_000
    header = TRACE.read_text().splitlines()[:5]
    assert any("synthetic" in line.lower() for line in header)
    w = TraceReplay(TRACE)
    times = w.arrival_times(0, w.duration)
    assert times.size > 1000
    assert interarrival_cv(times) > 1.0
