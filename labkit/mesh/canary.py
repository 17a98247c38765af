"""A canary as the mesh sees it: who keeps a user on one version, and which side's metrics tell
the truth about a bad version.

Sticky A/B (https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings-ConsistentHashLB):
a DestinationRule's `consistentHash` (`httpHeaderName`, `httpCookie`, `useSourceIp`,
`httpQueryParameterName`) picks the *host* (pod) inside the cluster a route chose. It keeps a
user on one version only when one cluster holds the pods of both versions (no subsets in the
route): then each user hashes to one pod, and the share of users per version follows the
versions' shares of the hash ring (their pod counts), not any weight. With a VirtualService
that splits by weight between subsets, every request draws its subset afresh, and the hash only
picks a pod inside the subset drawn: the same user sees both versions.

Flagger's A/B testing (fluxcd/flagger docs/gitbook/usage/deployment-strategies.md, "A/B
Testing"; tutorials/istio-ab-testing.md) does not hash at all: `analysis.match` becomes a
VirtualService route matching a header or cookie (`x-canary: {regex: ".*insider.*"}`,
`cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}`) that sends those users 100 % to the
canary, and everyone else to the primary. Stickiness is then a property of the user (who
carries the header or cookie), the split between users is decided by whoever sets it, and
there are no weights until promotion. The match is an RE2 full match on the whole Cookie header:
`canary=always; theme=dark` matches the docs' regex, but `theme=dark; canary=always` does not
(browsers put a space after `;`, which `(.*?;)?` does not take). Flagger's "Canary Release with
Session Affinity" (`analysis.sessionAffinity`) is the weighted variant: a cookie set on a first
canary answer then matches a route pinned to the canary.

Retries hide a bad canary (https://istio.io/latest/docs/reference/config/metrics/): the
caller's sidecar reports `reporter="source"` once per request with the final answer, after its
retries; the canary's own sidecar reports `reporter="destination"` once per attempt it served.
A canary failing every other attempt behind `retries: {attempts: 2, retryOn: 5xx}` looks 100 %
healthy from the source side and 50 % from the destination side. Flagger's built-in
`request-success-rate` reads the destination side (pkg/metrics/observers/istio.go), so its gate
sees the failures. `success_rates` reads both sides from the live sidecars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from labkit.mesh.proxy import Sidecar

__all__ = ["ReporterRates", "SuccessRate", "reporter_rate", "success_rates"]

Sample = tuple[Mapping[str, str], int, float]
"""(labels, request count, duration sum ms): one row of `Metrics.samples()`."""


@dataclass(frozen=True)
class SuccessRate:
    """Requests to a workload counted by one reporter, and the non-5xx share in %."""

    requests: int
    errors: int

    @property
    def percent(self) -> float | None:
        """None when there were no requests (Flagger: "no values found")."""
        return None if self.requests == 0 else (self.requests - self.errors) / self.requests * 100


@dataclass(frozen=True)
class ReporterRates:
    """Both sides' view of one workload."""

    source: SuccessRate
    destination: SuccessRate


def reporter_rate(samples: Iterable[Sample], reporter: str, workload: str,
                  namespace: str = "default") -> SuccessRate:
    """Sum `istio_requests_total` samples of `reporter` whose destination is `workload`, as
    Flagger's query selects them (destination_workload, destination_workload_namespace)."""
    requests = errors = 0
    for labels, count, _ in samples:
        if (labels.get("reporter") == reporter and labels.get("destination_workload") == workload
                and labels.get("destination_workload_namespace") == namespace):
            requests += count
            errors += count if labels.get("response_code", "").startswith("5") else 0
    return SuccessRate(requests, errors)


def success_rates(sidecars: Iterable[Sidecar], workload: str,
                  namespace: str = "default") -> ReporterRates:
    """Source- and destination-side success of `workload`, read from the telemetry of these
    running sidecars (e.g. `control_plane(cluster).sidecars()`: every caller and the workload)."""
    samples = [row for sidecar in sidecars for row in sidecar.telemetry.metrics.samples()]
    return ReporterRates(reporter_rate(samples, "source", workload, namespace),
                         reporter_rate(samples, "destination", workload, namespace))
