"""Envoy's upstream clusters as one sidecar holds them: a destination (service, subset, port)
with its endpoints, load balancer, connection-pool admission and outlier state
(`outbound|<port>|<subset>|<fqdn>`; the inbound hop to the local app is one too).

The decisions are the pure policy modules' (`pool`, `balancer`, `outlier`, `retries`); this
module keeps their per-cluster state and, for the pool, the futures of requests waiting as
pending. State lives as long as the cluster's traffic policy is unchanged across pushes
(`labkit.mesh.proxy.Sidecar._cluster`).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from labkit.mesh import retries
from labkit.mesh.destination import TrafficPolicy
from labkit.mesh.outlier import OutlierDetector
from labkit.mesh.pool import ConnectionPool, Lease, PoolLimits
from labkit.mesh.proxy_config import Endpoint

__all__ = ["Cluster"]


class _Slots:
    """`pool.ConnectionPool` admission with futures for the requests it keeps pending.

    The pure pool decides; a connection it "opens" is counted as open at once (the real socket
    comes from the host's keep-alive pool), so waiting happens only at `maxConnections`.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def admit(self) -> Lease | None:
        """Admit a request now: None is overflow; a lease without `connection` must `wait`."""
        lease = self.pool.acquire()
        if lease is not None and lease.opens is not None:
            self._wake(self.pool.connected(lease.opens))
        return lease

    async def wait(self, lease: Lease) -> None:
        """Wait as pending until the pool hands this lease a connection."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[lease.id] = waiter
        try:
            await waiter
        except BaseException:
            self._waiters.pop(lease.id, None)
            if lease.connection is None:
                self.pool.cancel(lease)
            else:
                self.release(lease, reusable=True)
            raise

    def release(self, lease: Lease, reusable: bool) -> None:
        nxt = self.pool.release(lease, reusable=reusable)
        if nxt is not None and nxt.opens is not None and nxt.connection is None:
            nxt = self.pool.connected(nxt.opens)
        self._wake(nxt)

    def _wake(self, lease: Lease | None) -> None:
        if lease is None or lease.connection is None:
            return
        waiter = self._waiters.pop(lease.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


_NO_LIMITS = PoolLimits()


class Cluster:
    """Envoy's cluster `outbound|<port>|<subset>|<fqdn>`: endpoints, LB, pool, outlier state."""

    def __init__(self, name: str, policy: TrafficPolicy, rng: random.Random) -> None:
        self.name = name
        self.policy = policy
        self.slots = _Slots(ConnectionPool(policy.connection_pool))
        self.balancer = policy.balancer(rng)
        self.outlier: OutlierDetector | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.hosts: list[str] = []
        self.version = -1
        # Istio's default retry policy for this cluster (consistent hashing keeps the host).
        self.default_retries = (retries.RetryPolicy(previous_hosts=False)
                                if policy.consistent_hash else retries.DEFAULT_RETRIES)
        # What the sidecar's fast path (`Sidecar._outbound_fast`) needs of a cluster: no hashing,
        # no pool limits, no timer.
        self.plain = (not policy.consistent_hash and policy.connection_pool == _NO_LIMITS
                      and self.default_retries.per_try_timeout is None)

    def set_endpoints(self, endpoints: list[Endpoint], now: float) -> None:
        self.endpoints = {e.address: e for e in endpoints}
        self.hosts = list(self.endpoints)
        if self.policy.outlier is not None:
            if self.outlier is None:
                self.outlier = OutlierDetector(self.policy.outlier, self.hosts, start=now)
            else:
                self.outlier.set_hosts(self.hosts)

    def describe(self, now: float) -> dict[str, Any]:
        pool = self.slots.pool
        return {
            "name": self.name,
            "loadBalancer": type(self.balancer).__name__,
            "endpoints": [
                {"address": h, "workload": e.workload, "labels": dict(e.labels),
                 "mtls": e.sidecar, "ejected": bool(self.outlier and self.outlier.is_ejected(h, now)),
                 "activeRequests": self.balancer.active.get(h, 0)}
                for h, e in self.endpoints.items()
            ],
            "circuitBreakers": {
                "maxConnections": pool.limits.max_connections,
                "maxPendingRequests": pool.limits.max_pending,
                "maxRequests": pool.limits.max_requests,
                "maxRetries": pool.limits.max_retries,
                "maxRequestsPerConnection": pool.limits.max_requests_per_connection,
            },
            "stats": {
                "upstream_rq_active": pool.active_requests,
                "upstream_rq_pending_active": pool.pending,
                "upstream_rq_pending_overflow": pool.upstream_rq_pending_overflow,
                "upstream_cx_overflow": pool.upstream_cx_overflow,
                "upstream_rq_retry_overflow": pool.upstream_rq_retry_overflow,
                "outlier_detection_ejections_total": self.outlier.ejections_total if self.outlier else 0,
            },
        }

