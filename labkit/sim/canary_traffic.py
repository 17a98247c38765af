"""What a canary rollout's users send and what each model version does with it, per interval.

The simulator (`labkit.sim.canary`) advances time one analysis interval at a time; this module
draws one interval's traffic in aggregate, with numpy, instead of one event per request. That
is exact, not an approximation: requests are independent given the routing in force, so

* the number of requests in an interval of a Poisson stream is Poisson(rate x seconds);
* Envoy's weighted pick (`labkit.mesh.routing.pick_destination`, one uniform draw per request)
  sends Binomial(n, weight / 100) of n requests to the canary (`bench/bench_canary.py` checks
  the real picking code against that binomial);
* the 5xx count of k requests that fail with probability p is Binomial(k, p), and the
  `istio_request_duration_milliseconds` bucket counts of k requests are Multinomial(k, the
  latency distribution's mass per bucket): Prometheus only ever sees those bucket counts, so
  Flagger's p99 computed from them is distributed exactly as with per-request draws.

Only what needs identities is drawn per request, vectorised: which user sent each request
that reached the new version (distinct users exposed, and whether the user is in the segment a
`segment` failure hits), and each labelled request's feedback arrival time and correctness.

Users are `user-0` ... `user-{n-1}`, each sending with the same rate. Segment and A/B cohort
membership come from a hash of the user id (blake2b, as the mesh's consistent hashing uses),
so a user stays in or out of them in every run: sticky, as a cookie or header set by hash is.
A cohort user carries the header `x-canary: insider` and the cookie `canary=always` (the
examples of Flagger's A/B docs, docs/gitbook/usage/deployment-strategies.md); A/B routing
evaluates the Canary's `analysis.match` with the mesh's own `MatchBlock` on those headers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from labkit.mesh.routing import MatchBlock, Request
from labkit.mesh.telemetry import DURATION_BUCKETS_MS
from labkit.params import check_range

__all__ = [
    "DEFAULT_SEVERITY",
    "FAILURES",
    "Served",
    "Traffic",
    "Version",
    "canary_version",
    "cohort",
    "histogram_quantile",
    "segment_users",
    "serve",
]

FAILURES = ("none", "errors", "latency", "quality", "segment")
"""How the new version can be worse than the primary."""

DEFAULT_SEVERITY: Mapping[str, float] = {
    "none": 0.0,
    "errors": 5.0,     # percentage points more 5xx
    "latency": 4.0,    # times the primary's median latency
    "quality": 5.0,    # percentage points less accuracy
    "segment": 50.0,   # % of the segment's requests that fail (other users are fine)
}
"""What each failure mode's `severity` means, and its default."""

_BOUNDS = np.array(DURATION_BUCKETS_MS)


@dataclass(frozen=True)
class Version:
    """How one model version behaves: 5xx probability, lognormal latency, accuracy."""

    error_rate: float = 0.002
    latency_ms: float = 40.0
    """Median latency (ms) at the destination sidecar."""
    latency_sigma: float = 0.5
    """Shape of the lognormal latency (0.5: p99 about 3.2 x the median)."""
    accuracy: float = 0.90
    segment_error_rate: float | None = None
    """5xx probability for users in the failing segment (None: the same as everyone's)."""

    def __post_init__(self) -> None:
        for name in ("error_rate", "accuracy"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        if self.segment_error_rate is not None:
            check_range("segment_error_rate", self.segment_error_rate, 0.0, 1.0)
        check_range("latency_ms", self.latency_ms, 1e-6, math.inf, closed="left")
        check_range("latency_sigma", self.latency_sigma, 0.0, 10.0)

    @property
    def bucket_mass(self) -> np.ndarray:
        """Probability of each duration bucket (Envoy's bounds, then +Inf)."""
        return _bucket_mass(self.latency_ms, self.latency_sigma)


@lru_cache(maxsize=256)
def _bucket_mass(median: float, sigma: float) -> np.ndarray:
    if sigma == 0:
        cdf = (median <= _BOUNDS).astype(float)
    else:
        z = (np.log(_BOUNDS) - math.log(median)) / (sigma * math.sqrt(2))
        cdf = 0.5 * (1 + np.array([math.erf(v) for v in z]))
    mass = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    mass = np.clip(mass, 0.0, None)
    mass.setflags(write=False)
    return mass / mass.sum()


def canary_version(primary: Version, failure: str, severity: float | None = None) -> Version:
    """The new version: the primary made worse in one way (`DEFAULT_SEVERITY` says how much)."""
    if failure not in FAILURES:
        raise ValueError(f"failure must be one of {', '.join(FAILURES)}; got {failure!r}")
    s = DEFAULT_SEVERITY[failure] if severity is None else check_range("severity", severity, 0.0, closed="left")
    if failure == "errors":
        return replace(primary, error_rate=min(1.0, primary.error_rate + s / 100))
    if failure == "latency":
        return replace(primary, latency_ms=primary.latency_ms * max(s, 1e-9))
    if failure == "quality":
        return replace(primary, accuracy=max(0.0, primary.accuracy - s / 100))
    if failure == "segment":
        return replace(primary, segment_error_rate=min(1.0, s / 100))
    return primary


@dataclass(frozen=True)
class Traffic:
    """Who sends requests, how often, and how labelled feedback comes back."""

    rate: float = 10.0
    """Requests per second from all users together."""
    users: int = 5000
    segment: float = 0.1
    """Share of users in the segment a `segment` failure hits (chosen by hash)."""
    ab_share: float = 0.1
    """Share of users who carry the A/B header and cookie (chosen by hash)."""
    feedback_fraction: float = 0.3
    """Share of predictions whose true label comes back."""
    feedback_delay: float = 30.0
    """Mean seconds (exponential) from a prediction to its label."""

    def __post_init__(self) -> None:
        check_range("rate", self.rate, 0.0, 1e6)
        check_range("users", self.users, 1, 10_000_000, integer=True)
        for name in ("segment", "ab_share", "feedback_fraction"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("feedback_delay", self.feedback_delay, 0.0, closed="left")


def _hash_share(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2 ** 64


@lru_cache(maxsize=32)
def segment_users(users: int, share: float) -> np.ndarray:
    """Which users are in the failing segment (bool per user index), chosen by hash."""
    out = np.array([_hash_share(f"segment:user-{u}") < share for u in range(users)])
    out.setflags(write=False)
    return out


def _user_request(user: int, share: float) -> Request:
    uid = f"user-{user}"
    headers = {"x-user-id": uid, "cookie": f"user={uid}"}
    if _hash_share(f"cohort:{uid}") < share:
        headers["x-canary"] = "insider"
        headers["cookie"] += "; canary=always"
    return Request("POST", "/v1/models/model:predict", headers=headers)


def cohort(match: Sequence[Mapping[str, Any]], users: int, share: float) -> np.ndarray:
    """Indices of the users whose requests `analysis.match` sends to the canary (any block)."""
    return _cohort(json.dumps(list(match), sort_keys=True), users, share)


@lru_cache(maxsize=32)
def _cohort(match_json: str, users: int, share: float) -> np.ndarray:
    blocks = [MatchBlock.from_spec(m, f"spec.analysis.match[{i}]")
              for i, m in enumerate(json.loads(match_json))]
    out = np.array([u for u in range(users)
                    if any(b.matches(_user_request(u, share)) for b in blocks)], dtype=np.int64)
    out.setflags(write=False)
    return out


def histogram_quantile(q: float, buckets: np.ndarray) -> float:
    """Prometheus's histogram_quantile over non-cumulative counts per Envoy bucket (+Inf
    last): linear interpolation inside the bucket holding rank q x total; the first bucket
    starts at 0; a rank in +Inf gives the highest finite bound. NaN for no observations.
    (prometheus/prometheus promql/quantile.go, bucketQuantile.)"""
    total = float(buckets.sum())
    if total == 0:
        return math.nan
    rank = q * total
    cumulative = np.cumsum(buckets)
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(_BOUNDS):
        return float(_BOUNDS[-1])
    lower = 0.0 if i == 0 else float(_BOUNDS[i - 1])
    below = 0.0 if i == 0 else float(cumulative[i - 1])
    inside = float(buckets[i])
    return lower + (float(_BOUNDS[i]) - lower) * ((rank - below) / inside if inside else 1.0)


_NO_BUCKETS = np.zeros(len(_BOUNDS) + 1, dtype=np.int64)
_NO_BUCKETS.setflags(write=False)
_NO_TIMES = np.zeros(0)
_NO_TIMES.setflags(write=False)
_NO_FLAGS = np.zeros(0, dtype=bool)
_NO_FLAGS.setflags(write=False)


@dataclass(frozen=True)
class Served:
    """One version's side of one time slice: what its destination sidecar counted (requests,
    non-5xx, duration buckets) and the labelled feedback that will come back for it."""

    requests: int = 0
    ok: int = 0
    buckets: np.ndarray = field(default_factory=lambda: _NO_BUCKETS, repr=False)
    label_times: np.ndarray = field(default_factory=lambda: _NO_TIMES, repr=False)
    label_correct: np.ndarray = field(default_factory=lambda: _NO_FLAGS, repr=False)

    def __add__(self, other: Served) -> Served:
        return Served(self.requests + other.requests, self.ok + other.ok, self.buckets + other.buckets,
                      np.concatenate([self.label_times, other.label_times]),
                      np.concatenate([self.label_correct, other.label_correct]))


def serve(rng: np.random.Generator, version: Version, n: int, users: np.ndarray | None,
          segment: np.ndarray, start: float, seconds: float, traffic: Traffic, *,
          latency: bool, labels: bool) -> Served:
    """`n` requests (sent uniformly over [start, start + seconds)) served by `version`;
    `users` are the senders' indices when known (for the segment), else none is in it.
    Only what someone reads is drawn: duration buckets with `latency`, feedback with `labels`."""
    if n == 0:
        return Served()
    segment_rate = version.segment_error_rate
    failing = int(segment[users].sum()) if users is not None and segment_rate is not None else 0
    errors = rng.binomial(n - failing, version.error_rate)
    if failing and segment_rate is not None:
        errors += rng.binomial(failing, segment_rate)
    buckets = rng.multinomial(n, version.bucket_mass) if latency else _NO_BUCKETS
    if not labels:
        return Served(n, n - int(errors), buckets)
    labelled = rng.binomial(n, traffic.feedback_fraction)
    times = start + rng.random(labelled) * seconds
    if traffic.feedback_delay:
        times = times + rng.exponential(traffic.feedback_delay, labelled)
    return Served(n, n - int(errors), buckets, times, rng.random(labelled) < version.accuracy)
