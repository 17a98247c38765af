"""labkit's Istio/Envoy equivalent.

Pure policy modules (no network, no simpy; they take data, a clock's `now` and a seeded
`random.Random`, and return decisions), shared by the live sidecar and the simulator:

- `spec`         reading Istio spec dicts with field-path errors, durations, percentages
- `flags`        Envoy response flags and the exact local-reply bodies
- `hosts`        which service a Host header names; which names a rule covers
- `routing`      VirtualService HTTP routes: match, weighted pick, rewrite, redirect, headers, mirror
- `faults`       fault injection (delay / abort with percentages)
- `retries`      retry policy, back-off, route timeout budget
- `pool`         connection-pool limits (circuit breaker)
- `outlier`      outlier detection (ejection)
- `balancer`     load balancers (LEAST_REQUEST, ROUND_ROBIN, RANDOM, consistentHash)
- `destination`  DestinationRule subsets and the merged traffic policy of one cluster
- `authz`        PeerAuthentication modes and AuthorizationPolicy evaluation

Live: `proxy` (the sidecar, over `proxy_http`, its HTTP/1.1 connections, and `clusters`, its
upstream clusters), `control` (istiod), `security`, `telemetry`, `wiretap`, and `canary` (both
reporters' success rates of a workload; sticky A/B vs Flagger's header/cookie match).
`proxy_config` is the data istiod pushes to a sidecar (no I/O).

Each module's docstring cites the Istio and Envoy pages whose behaviour it reproduces.
"""
