"""What sidecars cost at scale: added latency and CPU for a call tree of services, from a
measured per-hop cost.

A request enters the root service, which calls `fanout` services in parallel, each of which
calls `fanout` more, `depth` levels deep (depth 1 = the root calls its children only). Every
call crosses two sidecars (the caller's outbound and the callee's inbound), so a request makes
`calls = fanout + fanout**2 + ... + fanout**depth` calls and `2 * calls` sidecar hops. A service
answers after its own work (exponential, mean `app_ms`) and its slowest child, so parallel
calls add their *maximum*, not their sum: the tail of the per-hop cost matters more the wider
the tree.

The per-hop cost is sampled from a quantile function measured on this machine
(:func:`hop_quantiles`), and the same app times are used with and without sidecars (common
random numbers), so the difference is the sidecars' alone. CPU is the sidecars' per-hop CPU
times hops per second. Pure numpy; seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labkit.params import check_range, check_seed
from labkit.sim.results import Scalar, SimResult
from labkit.stats import percentile, percentiles

__all__ = ["ISTIO_124_SIDECAR", "SidecarCost", "hop_quantiles", "sidecar_cost"]

ISTIO_124_SIDECAR = {"vcpu_per_1000_rps": 0.20, "memory_mb": 60}
"""Istio 1.24's performance page: one sidecar (2 workers) at 1,000 requests per second with a
1 KB payload uses about 0.20 vCPU and 60 MB
(https://istio.io/v1.24/docs/ops/deployment/performance-and-scalability/, "Sidecar and ztunnel
resource usage"). Its latency results are charts only (P90/P99, client and server sidecar
together), so the per-hop latency is the student's own measurement."""

QUANTILES = np.linspace(0.0, 100.0, 201)
"""The percentiles (0..100) `hop_quantiles` measures."""
MAX_LEAVES = 1024


def hop_quantiles(direct: Sequence[float], through: Sequence[float], hops: int) -> np.ndarray:
    """Per-hop added latency (seconds) at 201 evenly spaced quantiles: the quantiles of the
    latencies `through` `hops` sidecars minus those of the `direct` latencies, divided by
    `hops` (and never below zero). Both lists are measured latencies in seconds."""
    hops = check_range("hops", hops, 1, integer=True)
    if len(direct) == 0 or len(through) == 0:
        raise ValueError("direct, through: need measured latencies on both paths")
    added = percentiles(through, QUANTILES) - percentiles(direct, QUANTILES)
    return np.maximum.accumulate(np.clip(added / hops, 0.0, None))


@dataclass(frozen=True)
class SidecarCost(SimResult):
    depth: int
    fanout: int
    calls: int
    """Calls one request makes (each crosses two sidecars)."""
    sidecars: int
    """Pods on the path, one sidecar each (one pod per service here)."""
    bare_ms: np.ndarray
    """End-to-end latency of each simulated request without sidecars."""
    meshed_ms: np.ndarray
    """The same requests with sidecars."""
    sidecar_cpu_cores: float
    """CPU the sidecars use at `rate` requests per second."""
    sidecar_memory_mb: float

    def percentile(self, q: float, meshed: bool = True) -> float:
        """The q-th percentile (0..100) of the end-to-end latency in ms, with or without sidecars."""
        return percentile(self.meshed_ms if meshed else self.bare_ms, q)

    def added(self, q: float) -> float:
        """Added latency at percentile `q`, in ms."""
        return self.percentile(q) - self.percentile(q, meshed=False)

    def summary(self) -> dict[str, Scalar]:
        return {"depth": self.depth, "fanout": self.fanout, "calls": self.calls, "sidecars": self.sidecars,
                "requests": int(self.bare_ms.size),
                **{f"{which}_p{q}_ms": self.percentile(q, which == "meshed")
                   for which in ("bare", "meshed") for q in (50, 99)},
                "added_p50_ms": self.added(50), "added_p99_ms": self.added(99),
                "sidecar_cpu_cores": self.sidecar_cpu_cores, "sidecar_memory_mb": self.sidecar_memory_mb}


def sidecar_cost(hop_ms: np.ndarray, *, depth: int, fanout: int, app_ms: float, rate: float,
                 cpu_ms_per_hop: float, memory_mb: float = ISTIO_124_SIDECAR["memory_mb"],
                 requests: int = 400, seed: int = 1) -> SidecarCost:
    """Simulate `requests` requests through the call tree; `hop_ms` is the per-hop quantile
    function in milliseconds (e.g. ``hop_quantiles(...) * 1000``)."""
    depth = check_range("depth", depth, 1, 8, integer=True)
    fanout = check_range("fanout", fanout, 1, 6, integer=True)
    if fanout ** depth > MAX_LEAVES:
        raise ValueError(f"depth {depth}, fanout {fanout}: keep fanout**depth <= {MAX_LEAVES} "
                         f"({fanout ** depth} leaf calls per request)")
    for name, value in (("app_ms", app_ms), ("rate", rate), ("cpu_ms_per_hop", cpu_ms_per_hop),
                        ("memory_mb", memory_mb)):
        check_range(name, value, 0, closed="left")
    requests = check_range("requests", requests, 1, integer=True)
    hop_ms = np.asarray(hop_ms, float)
    rng = np.random.default_rng(check_seed(seed))

    def hop(shape: tuple[int, ...]) -> np.ndarray:
        return np.interp(rng.random(shape), np.linspace(0.0, 1.0, len(hop_ms)), hop_ms)

    width = fanout ** depth
    bare = rng.exponential(app_ms, (requests, width)) if app_ms else np.zeros((requests, width))
    meshed = bare.copy()
    for _ in range(depth):
        width //= fanout
        overhead = hop((requests, width * fanout)) + hop((requests, width * fanout))
        app = rng.exponential(app_ms, (requests, width)) if app_ms else np.zeros((requests, width))
        bare = app + bare.reshape(requests, width, fanout).max(axis=2)
        meshed = app + (meshed + overhead).reshape(requests, width, fanout).max(axis=2)
    calls = sum(fanout ** k for k in range(1, depth + 1))
    return SidecarCost(depth, fanout, calls, calls + 1, bare[:, 0], meshed[:, 0],
                       rate * 2 * calls * cpu_ms_per_hop / 1000, (calls + 1) * memory_mb)
