"""Envoy response flags and the exact bodies of the replies a sidecar generates itself.

Students compare labkit's access log and `istio_requests_total{response_flags=...}` with
Istio's, so the flag letters and the local-reply strings are carried over verbatim from
Envoy: https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage
(`%RESPONSE_FLAGS%`) and the router / fault / RBAC filters' local replies. All local replies
are `content-type: text/plain` with no trailing newline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALL_FLAGS",
    "DELAY_INJECTED",
    "DOWNSTREAM_CONNECTION_TERMINATION",
    "DOWNSTREAM_PROTOCOL_ERROR",
    "FAULT_ABORT_BODY",
    "FAULT_INJECTED",
    "LOCAL_RATE_LIMITED_BODY",
    "LOCAL_RESET",
    "NO_CLUSTER",
    "NO_CLUSTER_FOUND",
    "NO_HEALTHY",
    "NO_HEALTHY_UPSTREAM",
    "NO_HEALTHY_UPSTREAM_BODY",
    "NO_ROUTE",
    "NO_ROUTE_FOUND",
    "OVERFLOW",
    "OVERLOADED_HEADER",
    "RATE_LIMITED",
    "RBAC_DENIED",
    "RBAC_DENIED_BODY",
    "RESET_BEFORE_HEADERS",
    "STREAM_IDLE_TIMEOUT",
    "TIMEOUT_BODY",
    "UNAUTHORIZED_EXTERNAL_SERVICE",
    "UPSTREAM_CONNECTION_FAILURE",
    "UPSTREAM_CONNECTION_TERMINATION",
    "UPSTREAM_OVERFLOW",
    "UPSTREAM_PROTOCOL_ERROR",
    "UPSTREAM_REMOTE_RESET",
    "UPSTREAM_REQUEST_TIMEOUT",
    "UPSTREAM_RETRY_LIMIT_EXCEEDED",
    "UPSTREAM_TIMEOUT",
    "LocalReply",
    "fault_abort",
    "format_flags",
    "reset_body",
]

# Flag letters, in Envoy's own order (its ResponseFlag enum), which is also the order in which
# Envoy prints several flags: "UF,URX", "DI,FI".
NO_HEALTHY_UPSTREAM = "UH"
UPSTREAM_REQUEST_TIMEOUT = "UT"
LOCAL_RESET = "LR"
UPSTREAM_REMOTE_RESET = "UR"
UPSTREAM_CONNECTION_FAILURE = "UF"
UPSTREAM_CONNECTION_TERMINATION = "UC"
UPSTREAM_OVERFLOW = "UO"
NO_ROUTE_FOUND = "NR"
DELAY_INJECTED = "DI"
FAULT_INJECTED = "FI"
RATE_LIMITED = "RL"
UNAUTHORIZED_EXTERNAL_SERVICE = "UAEX"
DOWNSTREAM_CONNECTION_TERMINATION = "DC"
UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
STREAM_IDLE_TIMEOUT = "SI"
DOWNSTREAM_PROTOCOL_ERROR = "DPE"
UPSTREAM_PROTOCOL_ERROR = "UPE"
NO_CLUSTER_FOUND = "NC"

ALL_FLAGS: tuple[str, ...] = (
    NO_HEALTHY_UPSTREAM, UPSTREAM_REQUEST_TIMEOUT, LOCAL_RESET, UPSTREAM_REMOTE_RESET,
    UPSTREAM_CONNECTION_FAILURE, UPSTREAM_CONNECTION_TERMINATION, UPSTREAM_OVERFLOW,
    NO_ROUTE_FOUND, DELAY_INJECTED, FAULT_INJECTED, RATE_LIMITED, UNAUTHORIZED_EXTERNAL_SERVICE,
    DOWNSTREAM_CONNECTION_TERMINATION, UPSTREAM_RETRY_LIMIT_EXCEEDED, STREAM_IDLE_TIMEOUT,
    DOWNSTREAM_PROTOCOL_ERROR, UPSTREAM_PROTOCOL_ERROR, NO_CLUSTER_FOUND,
)
_ORDER = {flag: i for i, flag in enumerate(ALL_FLAGS)}


def format_flags(flags: Iterable[str]) -> str:
    """The `%RESPONSE_FLAGS%` / `response_flags` label value: "-" when none, else Envoy's order."""
    unique = set(flags)
    unknown = unique - _ORDER.keys()
    if unknown:
        raise ValueError(f"unknown Envoy response flag(s): {sorted(unknown)}")
    return ",".join(sorted(unique, key=_ORDER.__getitem__)) or "-"


RESET_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. "
TIMEOUT_BODY = "upstream request timeout"
NO_HEALTHY_UPSTREAM_BODY = "no healthy upstream"
FAULT_ABORT_BODY = "fault filter abort"
RBAC_DENIED_BODY = "RBAC: access denied"
LOCAL_RATE_LIMITED_BODY = "local_rate_limited"
OVERLOADED_HEADER = ("x-envoy-overloaded", "true")


def reset_body(reason: str, *, retried: bool = False) -> str:
    """Body of the 503 Envoy sends when the upstream reset before answering.

    `reason` is Envoy's reset-reason text: "overflow", "connection failure",
    "connection termination", "remote reset", "remote refused stream reset", "local reset".
    After retries Envoy words it "retried and the latest reset reason: ...".
    """
    lead = "retried and the latest reset reason: " if retried else "reset reason: "
    return RESET_BEFORE_HEADERS + lead + reason


@dataclass(frozen=True)
class LocalReply:
    """A response the sidecar writes itself instead of forwarding one from upstream."""

    status: int
    body: str = ""
    flags: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def response_flags(self) -> str:
        return format_flags(self.flags)

    def with_flags(self, *extra: str) -> LocalReply:
        return LocalReply(self.status, self.body, self.flags + extra, self.headers)


NO_ROUTE = LocalReply(404, "", (NO_ROUTE_FOUND,))
NO_CLUSTER = LocalReply(503, "", (NO_CLUSTER_FOUND,))
NO_HEALTHY = LocalReply(503, NO_HEALTHY_UPSTREAM_BODY, (NO_HEALTHY_UPSTREAM,))
OVERFLOW = LocalReply(503, reset_body("overflow"), (UPSTREAM_OVERFLOW,), (OVERLOADED_HEADER,))
UPSTREAM_TIMEOUT = LocalReply(504, TIMEOUT_BODY, (UPSTREAM_REQUEST_TIMEOUT,))
RBAC_DENIED = LocalReply(403, RBAC_DENIED_BODY)
"""An RBAC denial carries no response flag (the details say rbac_access_denied_matched_policy)."""


def fault_abort(status: int, grpc_status: int | None = None) -> LocalReply:
    """The fault filter's abort reply: the configured status, body `fault filter abort`, FI.

    A gRPC abort is HTTP 200 with the code in `grpc-status` and the text in `grpc-message`.
    """
    if grpc_status is None:
        return LocalReply(status, FAULT_ABORT_BODY, (FAULT_INJECTED,))
    headers = (("content-type", "application/grpc"), ("grpc-status", str(grpc_status)),
               ("grpc-message", FAULT_ABORT_BODY))
    return LocalReply(200, "", (FAULT_INJECTED,), headers)
