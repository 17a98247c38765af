"""Connection-pool limits (DestinationRule `trafficPolicy.connectionPool`) as counters: Envoy's
circuit breaker for one destination cluster in one client sidecar.

Sources: https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings,
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/circuit_breaking,
https://istio.io/latest/docs/tasks/traffic-management/circuit-breaking/.

The HTTP/1.1 pool, as Envoy runs it:
1. Active requests already at `http2MaxRequests` ⇒ overflow (it applies to HTTP/1.1 too).
2. An idle connection ⇒ the request is sent on it at once.
3. Otherwise the request waits as *pending*; if the pending queue already holds
   `http1MaxPendingRequests` ⇒ overflow. A new connection is opened if `maxConnections` allows;
   at the limit the request just waits (Envoy counts `upstream_cx_overflow`, no failure).
   A request waiting for the connection opened for it is pending too, which is why Istio's
   circuit-breaking task sees some 503s even at concurrency 2.
4. A finished request hands its connection to the oldest pending one, unless the connection
   reached `maxRequestsPerConnection` (1 = no keep-alive) and is closed instead.
Overflow is an immediate local 503 with `x-envoy-overloaded: true`, flag UO (see
`flags.OVERFLOW`); it is never retried and does not count for outlier detection.

Limits are per client proxy and per cluster (a subset is its own cluster), not per host; unset
or 0 means unlimited (Istio sets 2^32-1, not Envoy's 1024 / 3). `maxRetries` caps the retries
outstanding at once in the cluster (`try_retry` / `retry_done`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.mesh import spec

__all__ = ["ConnectionPool", "Lease", "PoolLimits"]


@dataclass(frozen=True)
class PoolLimits:
    max_connections: int = spec.UNLIMITED
    max_pending: int = spec.UNLIMITED
    max_requests: int = spec.UNLIMITED
    max_requests_per_connection: int = 0  # 0 = unlimited
    max_retries: int = spec.UNLIMITED

    @classmethod
    def from_spec(cls, value: Mapping[str, Any] | None, path: str = "connectionPool") -> PoolLimits:
        """Build from `{tcp: {maxConnections}, http: {http1MaxPendingRequests, http2MaxRequests,
        maxRequestsPerConnection, maxRetries, ...}}`; other Istio fields are accepted and ignored."""
        pool = spec.mapping(value, path)
        spec.check_keys(pool, ("tcp", "http"), path)
        tpath, hpath = spec.join(path, "tcp"), spec.join(path, "http")
        tcp = spec.mapping(pool.get("tcp"), tpath)
        spec.check_keys(tcp, ("maxConnections", "connectTimeout", "tcpKeepalive",
                              "maxConnectionDuration", "idleTimeout"), tpath)
        http = spec.mapping(pool.get("http"), hpath)
        spec.check_keys(http, ("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                               "maxRetries", "idleTimeout", "h2UpgradePolicy", "useClientProtocol",
                               "maxConcurrentStreams"), hpath)
        for key, section, where in (("connectTimeout", tcp, tpath), ("maxConnectionDuration", tcp, tpath),
                                    ("idleTimeout", tcp, tpath), ("idleTimeout", http, hpath)):
            spec.duration(section.get(key), spec.join(where, key))

        def limit(section: Mapping[str, Any], key: str, where: str) -> int:
            n = spec.integer(section.get(key), spec.join(where, key), default=0, minimum=0)
            return n if n > 0 else spec.UNLIMITED  # istiod only applies values > 0

        return cls(
            max_connections=limit(tcp, "maxConnections", tpath),
            max_pending=limit(http, "http1MaxPendingRequests", hpath),
            max_requests=limit(http, "http2MaxRequests", hpath),
            max_requests_per_connection=spec.integer(
                http.get("maxRequestsPerConnection"), spec.join(hpath, "maxRequestsPerConnection"),
                default=0, minimum=0),
            max_retries=limit(http, "maxRetries", hpath),
        )


@dataclass(eq=False, slots=True)
class Lease:
    """One request's place in the pool.

    `connection` is set once the request may be sent on that connection (None while pending).
    `opens` is set when the caller must open a connection for the pool (then report it with
    `connected` or `connect_failed`); the connection serves the *oldest* pending request.
    """

    id: int
    connection: int | None = None
    opens: int | None = None


class ConnectionPool:
    """Counters and the pending queue of one cluster's HTTP/1.1 pool. No sockets, no clock.

    Every method that can start a waiting request returns that `Lease` (with `connection` set)
    or, when a connection must be opened first, a pending lease with `opens` set.
    """

    def __init__(self, limits: PoolLimits = PoolLimits()) -> None:
        self.limits = limits
        self._ids = itertools.count(1)
        self._idle: deque[int] = deque()
        self._served: dict[int, int] = {}     # open or opening connection -> requests started
        self._opening = 0
        self._pending: deque[Lease] = deque()
        self.active_requests = 0
        self.active_retries = 0
        # Envoy's cluster stats of the same names.
        self.upstream_rq_pending_overflow = 0
        self.upstream_cx_overflow = 0
        self.upstream_rq_retry_overflow = 0

    @property
    def connections(self) -> int:
        """Open or opening connections."""
        return len(self._served)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def acquire(self) -> Lease | None:
        """Admit a new request, or None: overflow (answer `flags.OVERFLOW`)."""
        if self.active_requests >= self.limits.max_requests:
            self.upstream_rq_pending_overflow += 1
            return None
        lease = Lease(next(self._ids))
        if self._idle:
            self._attach(lease, self._idle.popleft())
            return lease
        if len(self._pending) >= self.limits.max_pending:
            self.upstream_rq_pending_overflow += 1
            return None
        self._pending.append(lease)
        lease.opens = self._open()
        if lease.opens is None:
            self.upstream_cx_overflow += 1
        return lease

    def _open(self) -> int | None:
        """A new connection id if the pool may open one for its waiters, else None."""
        if self.connections >= self.limits.max_connections or self._opening >= len(self._pending):
            return None
        conn = next(self._ids)
        self._served[conn] = 0
        self._opening += 1
        return conn

    def _attach(self, lease: Lease, conn: int) -> Lease:
        lease.connection = conn
        self._served[conn] += 1
        self.active_requests += 1
        return lease

    def _give(self, conn: int) -> Lease | None:
        """A ready connection serves the oldest waiter, or goes idle."""
        if not self._pending:
            self._idle.append(conn)
            return None
        return self._attach(self._pending.popleft(), conn)

    def connected(self, conn: int) -> Lease | None:
        """Connection `conn` is up; returns the pending request it now serves (send it)."""
        self._opening -= 1
        return self._give(conn)

    def connect_failed(self, conn: int) -> Lease | None:
        """Opening `conn` failed; the oldest pending request fails with it (returned: answer
        it with the connect-failure reply)."""
        self._opening -= 1
        del self._served[conn]
        return self._pending.popleft() if self._pending else None

    def release(self, lease: Lease, *, reusable: bool = True) -> Lease | None:
        """The request on `lease` finished. `reusable=False`: its connection was closed or broke.

        Returns the next request to serve: on the freed connection, or (when the connection
        had to close) a pending lease whose `opens` names a connection to open.
        """
        if lease.connection is None:
            raise ValueError(f"lease {lease.id} never got a connection; use cancel()")
        self.active_requests -= 1
        conn, lease.connection = lease.connection, None
        cap = self.limits.max_requests_per_connection
        if reusable and not (cap and self._served[conn] >= cap):
            return self._give(conn)
        del self._served[conn]
        opens = self._open()
        if opens is None:
            return None
        waiter = self._pending[self._opening - 1]
        waiter.opens = opens
        return waiter

    def cancel(self, lease: Lease) -> None:
        """A pending request gave up (timeout, client gone) before getting a connection."""
        if lease in self._pending:
            self._pending.remove(lease)

    def try_retry(self) -> bool:
        """Take a retry slot (`maxRetries`); False means the retry is refused (flag UO)."""
        if self.active_retries >= self.limits.max_retries:
            self.upstream_rq_retry_overflow += 1
            return False
        self.active_retries += 1
        return True

    def retry_done(self) -> None:
        self.active_retries -= 1
