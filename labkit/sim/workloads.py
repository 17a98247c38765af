"""Arrival processes for the simulators: Poisson, bursty (MMPP), diurnal, and trace replay.

Every workload yields *absolute* arrival times in increasing order, in numpy chunks:
``arrival_chunks(rng, horizon)``. Chunks keep memory bounded on long horizons (20 req/s over
1e6 s is 2e7 arrivals) while letting numpy draw thousands of samples per call, which is what
keeps the simulator's hot loop cheap. ``arrival_times(rng, horizon)`` concatenates them for
small horizons, plots and tests.

Randomness always comes from the caller: pass a ``numpy.random.Generator``, an ``int`` seed or
a ``random.Random`` (see :func:`as_generator`), so a lab gets the same trace for the same seed.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from labkit.params import check_range

__all__ = [
    "Bursty",
    "Diurnal",
    "Poisson",
    "TraceReplay",
    "Workload",
    "as_generator",
    "interarrival_cv",
]

#: How many arrivals a chunk holds at most; big enough to amortise numpy calls, small enough
#: to stay a few hundred KB.
CHUNK = 1 << 16


def as_generator(seed: int | np.random.Generator | random.Random | None) -> np.random.Generator:
    """Turn a seed, a numpy Generator or a ``random.Random`` into a numpy Generator.

    A ``random.Random`` is consumed for 128 bits, so the same ``random.Random`` state always
    gives the same numpy stream.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, random.Random):
        return np.random.default_rng(seed.getrandbits(128))
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, numpy.random.Generator, random.Random or None, not {type(seed).__name__}")


def interarrival_cv(arrival_times: np.ndarray) -> float:
    """Measured coefficient of variation (std / mean) of the gaps between arrival times."""
    gaps = np.diff(np.asarray(arrival_times, dtype=float))
    if gaps.size < 2 or gaps.mean() <= 0:
        raise ValueError("need at least 3 distinct arrival times to measure a CV")
    return float(gaps.std() / gaps.mean())


class Workload(ABC):
    """An arrival process. Subclasses implement :meth:`arrival_chunks` and :attr:`mean_rate`."""

    @property
    @abstractmethod
    def mean_rate(self) -> float:
        """Long-run mean arrival rate in requests per second."""

    @abstractmethod
    def arrival_chunks(self, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
        """Yield increasing arrays of absolute arrival times in ``[0, horizon)``."""

    def arrival_times(self, seed: int | np.random.Generator | random.Random | None, horizon: float) -> np.ndarray:
        """All arrival times in ``[0, horizon)`` as one array (use for short horizons)."""
        chunks = list(self.arrival_chunks(as_generator(seed), check_range("horizon", horizon, 0, closed="left")))
        return np.concatenate(chunks) if chunks else np.empty(0)

    def measured_cv(self, seed: int | np.random.Generator | random.Random | None, horizon: float) -> float:
        """Coefficient of variation of inter-arrival times measured on one sample path."""
        return interarrival_cv(self.arrival_times(seed, horizon))


class Poisson(Workload):
    """Homogeneous Poisson arrivals: exponential gaps, CV exactly 1 in theory."""

    def __init__(self, rate: float) -> None:
        self.rate = check_range("Poisson rate", rate, 0, closed="neither")

    def __repr__(self) -> str:
        return f"Poisson(rate={self.rate!r})"

    @property
    def mean_rate(self) -> float:
        return self.rate

    @property
    def cv(self) -> float:
        """Theoretical coefficient of variation of inter-arrival times."""
        return 1.0

    def arrival_chunks(self, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
        t = 0.0
        scale = 1.0 / self.rate
        while True:
            times = t + np.cumsum(rng.exponential(scale, CHUNK))
            if times[-1] >= horizon:
                yield times[: np.searchsorted(times, horizon)]
                return
            t = float(times[-1])
            yield times


class Bursty(Workload):
    """A two-state Markov-modulated Poisson process (MMPP-2); ``low_rate=0`` makes it on/off.

    The process stays in the *high* state for an exponential time with mean
    ``mean_high_duration`` seconds, arriving at ``high_rate``, then in the *low* state for an
    exponential time with mean ``mean_low_duration``, arriving at ``low_rate``, and so on.
    It starts in a state drawn from the stationary distribution. Bursts make the gaps between
    arrivals more variable than Poisson's (CV > 1), which is what hurts keep-alive policies.
    """

    def __init__(
        self,
        high_rate: float,
        low_rate: float = 0.0,
        *,
        mean_high_duration: float = 60.0,
        mean_low_duration: float = 600.0,
    ) -> None:
        self.high_rate = check_range("Bursty high_rate", high_rate, 0, closed="neither")
        self.low_rate = check_range("Bursty low_rate", low_rate, 0, closed="left")
        if self.low_rate >= self.high_rate:
            raise ValueError(f"Bursty low_rate ({self.low_rate}) must be below high_rate ({self.high_rate})")
        self.mean_high_duration = check_range("Bursty mean_high_duration", mean_high_duration, 0, closed="neither")
        self.mean_low_duration = check_range("Bursty mean_low_duration", mean_low_duration, 0, closed="neither")

    def __repr__(self) -> str:
        return (
            f"Bursty(high_rate={self.high_rate!r}, low_rate={self.low_rate!r}, "
            f"mean_high_duration={self.mean_high_duration!r}, "
            f"mean_low_duration={self.mean_low_duration!r})"
        )

    @property
    def high_fraction(self) -> float:
        """Long-run fraction of time spent in the high state."""
        return self.mean_high_duration / (self.mean_high_duration + self.mean_low_duration)

    @property
    def mean_rate(self) -> float:
        p = self.high_fraction
        return p * self.high_rate + (1 - p) * self.low_rate

    @property
    def cv(self) -> float:
        """Theoretical CV of the stationary inter-arrival time (seen from an arrival).

        The MMPP is a Markovian arrival process with ``D0 = Q - L`` and ``D1 = L`` (``Q`` the
        generator of the state chain, ``L`` the diagonal of rates). The state just after an
        arrival is a Markov chain with matrix ``P = (-D0)^-1 D1``; with its stationary vector
        ``pi``, the k-th moment of a gap is ``k! pi (-D0)^-k 1``.
        """
        a = 1.0 / self.mean_high_duration
        b = 1.0 / self.mean_low_duration
        q = np.array([[-a, a], [b, -b]])
        lam = np.diag([self.high_rate, self.low_rate])
        inv = np.linalg.inv(lam - q)  # (-D0)^-1
        p = inv @ lam
        # stationary vector of the 2x2 stochastic matrix p
        pi = np.array([p[1, 0], p[0, 1]])
        pi = pi / pi.sum()
        ones = np.ones(2)
        m1 = pi @ inv @ ones
        m2 = 2 * pi @ inv @ inv @ ones
        return float(math.sqrt(m2 / m1**2 - 1))

    def arrival_chunks(self, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
        # Draw many state periods at once; within a period arrivals are a Poisson count placed
        # uniformly, and periods are disjoint, so one sort orders the whole batch.
        periods = max(16, int(CHUNK / max(1.0, self.mean_rate * (self.mean_high_duration + self.mean_low_duration))))
        high = bool(rng.random() < self.high_fraction)
        t = 0.0
        while t < horizon:
            n = 2 * periods
            means = np.empty(n)
            rates = np.empty(n)
            first, second = (0, 1) if high else (1, 0)
            means[first::2], rates[first::2] = self.mean_high_duration, self.high_rate
            means[second::2], rates[second::2] = self.mean_low_duration, self.low_rate
            durations = rng.exponential(means)
            ends = t + np.cumsum(durations)
            starts = ends - durations
            counts = rng.poisson(rates * durations)
            times = np.repeat(starts, counts) + rng.random(int(counts.sum())) * np.repeat(durations, counts)
            times.sort()
            t = float(ends[-1])
            if t >= horizon:
                times = times[: np.searchsorted(times, horizon)]
            if times.size:
                yield times


class Diurnal(Workload):
    """Non-homogeneous Poisson arrivals with a sinusoidal daily profile, drawn by thinning.

    ``rate(t) = mean_rate * (1 - a * cos(2 pi t / period))`` with ``a`` set so the peak/trough
    ratio is ``peak_to_trough``: the trough is at ``t = 0`` (midnight) and the peak half a
    period later (noon). Thinning (Lewis and Shedler) draws a Poisson stream at the peak rate
    and keeps each arrival with probability ``rate(t) / peak``.
    """

    def __init__(self, mean_rate: float, peak_to_trough: float = 4.0, *, period: float = 86400.0) -> None:
        self._mean_rate = check_range("Diurnal mean_rate", mean_rate, 0, closed="neither")
        ratio = check_range("Diurnal peak_to_trough", peak_to_trough, 1, closed="left")
        self.peak_to_trough = ratio
        self.period = check_range("Diurnal period", period, 0, closed="neither")
        self.amplitude = (ratio - 1) / (ratio + 1)

    def __repr__(self) -> str:
        return f"Diurnal(mean_rate={self._mean_rate!r}, peak_to_trough={self.peak_to_trough!r}, period={self.period!r})"

    @property
    def mean_rate(self) -> float:
        return self._mean_rate

    @property
    def peak_rate(self) -> float:
        return self._mean_rate * (1 + self.amplitude)

    def rate_at(self, t: float | np.ndarray) -> float | np.ndarray:
        """Instantaneous arrival rate at time(s) ``t`` (seconds)."""
        return self._mean_rate * (1 - self.amplitude * np.cos(2 * np.pi * np.asarray(t) / self.period))

    def arrival_chunks(self, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
        peak = self.peak_rate
        for candidates in Poisson(peak).arrival_chunks(rng, horizon):
            kept = candidates[rng.random(candidates.size) * peak < self.rate_at(candidates)]
            if kept.size:
                yield kept


class TraceReplay(Workload):
    """Replays recorded arrival timestamps (seconds), from an array or a CSV file.

    The CSV holds one timestamp per line in its first column; blank lines and lines starting
    with ``#`` are skipped, and a first data line whose first field is ``timestamp`` is taken
    as a header. Timestamps must be finite, >= 0 and non-decreasing; a bad row raises
    ``ValueError`` naming the file and line. With ``loop=True`` the trace repeats every
    ``duration`` seconds (default: the last timestamp rounded down, plus one second) so a
    one-day trace can drive a longer simulation.
    """

    def __init__(
        self,
        source: str | Path | Sequence[float] | np.ndarray,
        *,
        loop: bool = False,
        duration: float | None = None,
    ) -> None:
        if isinstance(source, (str, Path)):
            self.path: Path | None = Path(source)
            self.timestamps = _read_trace_csv(self.path)
        else:
            self.path = None
            self.timestamps = _validated_array(np.asarray(source, dtype=float))
        if self.timestamps.size == 0:
            where = f"{self.path}: " if self.path else ""
            raise ValueError(f"{where}trace has no timestamps")
        last = float(self.timestamps[-1])
        self.duration = float(math.floor(last) + 1) if duration is None else float(duration)
        if not math.isfinite(self.duration) or self.duration <= last:
            raise ValueError(f"TraceReplay duration ({self.duration}) must exceed the last timestamp ({last})")
        self.loop = bool(loop)

    def __repr__(self) -> str:
        src = str(self.path) if self.path else f"<{self.timestamps.size} timestamps>"
        return f"TraceReplay({src!r}, loop={self.loop}, duration={self.duration!r})"

    @property
    def mean_rate(self) -> float:
        return self.timestamps.size / self.duration

    def arrival_chunks(self, rng: np.random.Generator, horizon: float) -> Iterator[np.ndarray]:
        offset = 0.0
        while offset < horizon:
            times = self.timestamps + offset
            if times[-1] >= horizon:
                times = times[: np.searchsorted(times, horizon)]
            for start in range(0, times.size, CHUNK):
                yield times[start : start + CHUNK]
            if not self.loop:
                return
            offset += self.duration


def _validated_array(times: np.ndarray) -> np.ndarray:
    if times.ndim != 1:
        raise ValueError(f"trace timestamps must be a 1-D sequence, got shape {times.shape}")
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"trace timestamp #{i} is {float(times[i])!r}; timestamps must be finite and >= 0")
    if times.size > 1 and (np.diff(times) < 0).any():
        i = int(np.argmax(np.diff(times) < 0)) + 1
        raise ValueError(
            f"trace timestamp #{i} ({float(times[i])!r}) is earlier than the one before ({float(times[i - 1])!r})"
        )
    return times


def _read_trace_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise type(exc)(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    values: list[float] = []
    previous = -math.inf
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        field = line.split(",", 1)[0].strip()
        if not values and field.lower() == "timestamp":
            continue
        try:
            value = float(field)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: {field!r} is not a timestamp in seconds") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}:{lineno}: timestamp {field!r} must be finite and >= 0")
        if value < previous:
            raise ValueError(f"{path}:{lineno}: timestamp {value!r} is earlier than the previous one ({previous!r})")
        previous = value
        values.append(value)
    return np.asarray(values, dtype=float)
