"""Checks for labs/02_why_service_mesh.ipynb.

The expected answers come from labkit's pure policy code (`labkit.mesh.authz`) and from
closed-form probability; no live component is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from labkit.grading.checks import (
    NotAnsweredError,
    check_choices,
    fail,
    passed,
    require_number,
)
from labkit.mesh import authz
from labkit.mesh.spec import SpecError

# --- Exercise 1: what Kubernetes gives, what the mesh adds --------------------------------

FEATURES: dict[str, str] = {
    "find a service by name": "kubernetes",
    "spread connections over a Service's pods": "kubernetes",
    "spread each request over pods, even on one keep-alive connection": "mesh",
    "retry a request that got a 503": "mesh",
    "encrypt and authenticate pod-to-pod traffic": "mesh",
    "count requests per caller, callee and response code": "mesh",
    "refuse a caller by its workload identity": "mesh",
    "restart a crashed container": "kubernetes",
}


def check_features(answer: object) -> None:
    """Feature -> "kubernetes" (plain Kubernetes networking and workloads) or "mesh"."""
    check_choices("features", answer, FEATURES,
                  hint="kube-proxy balances TCP connections, not requests, and knows nothing about HTTP; "
                       "think about which layer can see an HTTP status code or a certificate.")


# --- Exercise 2: an AuthorizationPolicy ---------------------------------------------------

CALLER = "cluster.local/ns/default/sa/sleep"
#: (description, request, must be allowed) — the cases the policy is tested on.
AUTHZ_CASES: tuple[tuple[str, authz.AuthzRequest, bool], ...] = (
    ("sleep GET /", authz.AuthzRequest(method="GET", path="/", principal=CALLER), True),
    ("sleep GET /healthz", authz.AuthzRequest(method="GET", path="/healthz", principal=CALLER), True),
    ("sleep POST /", authz.AuthzRequest(method="POST", path="/", principal=CALLER), False),
    ("intruder GET /", authz.AuthzRequest(method="GET", path="/", principal="cluster.local/ns/default/sa/intruder"),
     False),
    ("backend GET / (another workload's identity)",
     authz.AuthzRequest(method="GET", path="/", principal="cluster.local/ns/default/sa/backend"), False),
    ("plaintext GET / (no certificate)", authz.AuthzRequest(method="GET", path="/"), False),
    ("sleep from another namespace GET /", authz.AuthzRequest(method="GET", path="/",
                                                              principal="cluster.local/ns/other/sa/sleep"), False),
)
FRONTEND_LABELS = {"app": "frontend", "version": "v1"}


def check_allow_sleep_get(spec: object) -> None:
    """`spec` is the spec of an AuthorizationPolicy in namespace default: only the `sleep`
    service account of namespace default may call frontend, and only with GET."""
    if spec is None or spec is Ellipsis:
        raise NotAnsweredError("policy: no answer yet.\nHINT: write the spec as a dict, like the YAML under `spec:`.")
    if not isinstance(spec, Mapping):
        fail(f"policy: expected a dict (the `spec:` part), got {type(spec).__name__}.",
             "write e.g. {'selector': {...}, 'action': 'ALLOW', 'rules': [...]}.")
    try:
        policy = authz.AuthorizationPolicy.from_spec(dict(spec), "default", "answer")
    except SpecError as exc:
        fail(f"policy: Istio would reject it: {exc}", "compare the field names with the policy used in the lab.")
    if not policy.applies_to("default", FRONTEND_LABELS):
        fail("policy: it does not select the frontend workload.", "selector.matchLabels must match frontend's labels.")
    wrong = [name for name, request, allowed in AUTHZ_CASES
             if authz.authorize([policy], "default", FRONTEND_LABELS, request).allowed != allowed]
    if wrong:
        fail(f"policy: wrong decision for: {', '.join(wrong)}.",
             "an ALLOW policy denies everything it does not match; principals look like "
             "cluster.local/ns/<namespace>/sa/<service account>, and methods are upper-case.")
    passed(f"policy: all {len(AUTHZ_CASES)} requests decided as intended")


# --- Exercise 3: how many retries ---------------------------------------------------------

RETRY_FAILURE = 0.3       # each try fails independently with this probability
RETRY_TARGET = 0.999      # wanted share of successful requests


def needed_attempts(p: float = RETRY_FAILURE, target: float = RETRY_TARGET) -> int:
    """Smallest `retries.attempts` n with 1 - p^(n+1) >= target."""
    tries = math.ceil(math.log(1 - target) / math.log(p) - 1e-12)
    return max(tries - 1, 0)


def check_attempts(answer: object) -> None:
    value = require_number("attempts", answer)
    expected = needed_attempts()
    if value != int(value) or value < 0:
        fail(f"attempts: {value:g} is not a whole number of retries.", "attempts counts retries: 0, 1, 2, ...")
    if int(value) == expected:
        passed("attempts is right")
        return
    if int(value) == expected + 1:
        fail(f"attempts: {value:g} is one too many.",
             "attempts counts RE-tries: a request gets attempts + 1 tries in total.")
    fail(f"attempts: {value:g} is {'too many' if value > expected else 'too few'}.",
         "a request fails only when every try fails: with independent tries that is p ** tries; "
         "find the smallest number of tries that brings it below 1 - target.")


def summary_numbers(before: Mapping[int, int], after: Mapping[int, int]) -> dict[str, Any]:
    """Success rates from two status-code count dicts (used by the summary cell)."""
    def rate(counts: Mapping[int, int]) -> float:
        total = sum(counts.values())
        return sum(n for c, n in counts.items() if 200 <= c < 300) / total if total else math.nan

    return {"before": rate(before), "after": rate(after)}
