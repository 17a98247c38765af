"""Checks for labs/03_sidecar_proxy.ipynb.

The checks read only what the notebook hands them (measured load results, a sidecar's
configuration as a plain dict); they import no live component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from labkit.grading.checks import (
    NotAnsweredError,
    check_choices,
    check_close,
    fail,
    passed,
)

# --- Exercise 1: data plane or control plane ----------------------------------------------

PLANES: dict[str, str] = {
    "forwarding a request to one of httpbin's pods": "data plane",
    "the TLS handshake between two sidecars": "data plane",
    "signing a workload's certificate": "control plane",
    "turning a VirtualService into routes for every sidecar": "control plane",
    "retrying a request that failed": "data plane",
    "writing an access-log line": "data plane",
    "telling sidecars that a new pod is ready (endpoints)": "control plane",
    "counting istio_requests_total": "data plane",
}


def check_planes(answer: object) -> None:
    check_choices("planes", answer, PLANES,
                  hint="the data plane touches each request or connection; the control plane never sees "
                       "a request, it computes configuration and certificates and pushes them.")


# --- Exercise 2: the overhead of one sidecar hop ------------------------------------------


class _Measured(Protocol):
    def percentile(self, p: float) -> float: ...


def hop_overhead_ms(direct: _Measured, meshed: _Measured, hops: int) -> float:
    """Added median latency per sidecar hop, in milliseconds."""
    return (meshed.percentile(50) - direct.percentile(50)) / hops * 1000


def check_hop_overhead(answer: object, direct: _Measured, meshed: _Measured, hops: int = 2) -> None:
    """`direct` and `meshed` are the notebook's own `labkit.load` results."""
    check_close("overhead per hop", answer, hop_overhead_ms(direct, meshed, hops), rel_tol=0.02, abs_tol=1e-4,
                unit=" ms",
                hint="take the median (p50) of each run, subtract, divide by the number of sidecars the "
                     "request crossed, and convert seconds to milliseconds.")


# --- Exercise 3: endpoints the control plane pushed ---------------------------------------

HTTPBIN_FQDN = "httpbin.default.svc.cluster.local"
SCALED_REPLICAS = 3


def check_endpoints(answer: object, sidecar_config: Mapping[str, Any]) -> None:
    """`answer`: the addresses sleep's sidecar would send httpbin requests to, read from its
    configuration after scaling httpbin to SCALED_REPLICAS pods."""
    if answer is None or answer is Ellipsis:
        raise NotAnsweredError("endpoints: no answer yet.\nHINT: look in sleep.config()['services'].")
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Sequence):
        fail(f"endpoints: expected a list of 'host:port' strings, got {type(answer).__name__}.",
             "build a list of the addresses, e.g. ['127.0.0.1:41929', ...].")
    pushed = sorted(sidecar_config.get("services", {}).get(HTTPBIN_FQDN, []))
    if len(pushed) != SCALED_REPLICAS:
        fail(f"endpoints: sleep's sidecar knows {len(pushed)} httpbin endpoint(s), not {SCALED_REPLICAS}.",
             f"apply the httpbin Deployment with replicas: {SCALED_REPLICAS} first, then read sleep.config() again.")
    if sorted(str(a) for a in answer) != pushed:
        fail(f"endpoints: {len(answer)} address(es) given; they are not the ones in sleep's configuration.",
             f"read sleep.config()['services']['{HTTPBIN_FQDN}'] after the scale-up.")
    passed(f"endpoints: the control plane pushed all {SCALED_REPLICAS} pods to sleep's sidecar")

