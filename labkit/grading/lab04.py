"""Checks for labs/04_traffic_management.ipynb.

Expected answers come from labkit's pure policy code (`labkit.mesh.routing`) and from the mesh
simulator (`labkit.sim.simulate_mesh`); no live component is imported.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from labkit.grading.checks import (
    NotAnsweredError,
    check_choices,
    check_close,
    fail,
    passed,
    require_number,
)
from labkit.mesh.routing import Forward, Request, VirtualService
from labkit.mesh.spec import SpecError
from labkit.sim import MeshSimResult, simulate_mesh

# --- Exercise 1: a canary with a tester ---------------------------------------------------

CANARY_SHARE = 0.25   # of everyone else's requests to v2
TESTER = "jason"      # always v2
_ROUTING_SAMPLES = 4000
_SHARE_TOLERANCE = 0.03


def _subset_counts(vs: VirtualService, headers: Mapping[str, str], n: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(n):
        decision = vs.decide(Request("GET", "/", "backend:9080", dict(headers)), rng)
        if isinstance(decision, Forward):
            host = decision.destination.host.split(".")[0]
            counts[f"{host}/{decision.destination.subset or '-'}"] += 1
        else:
            counts[type(decision).__name__] += 1
    return counts


def check_canary(spec: object) -> None:
    """`spec` is the spec of a VirtualService for `backend` in namespace default."""
    if spec is None or spec is Ellipsis:
        raise NotAnsweredError("canary: no answer yet.\nHINT: write the spec as a dict, like the YAML under `spec:`.")
    if not isinstance(spec, Mapping):
        fail(f"canary: expected a dict (the `spec:` part), got {type(spec).__name__}.",
             "write e.g. {'hosts': ['backend'], 'http': [...]}.")
    try:
        vs = VirtualService.from_spec(dict(spec), "default", "canary")
    except SpecError as exc:
        fail(f"canary: Istio would reject it: {exc}", "compare with the VirtualServices applied in the lab.")
    if not vs.applies_to("backend:9080", "default"):
        fail("canary: it does not apply to requests for `backend`.", "hosts must name the backend service.")
    tester = _subset_counts(vs, {"end-user": TESTER}, 200, seed=1)
    if tester != Counter({"backend/v2": 200}):
        fail(f"canary: requests from {TESTER} went to {dict(tester)}, not always to subset v2.",
             "put the route matching the end-user header FIRST: the first matching route wins.")
    others = _subset_counts(vs, {}, _ROUTING_SAMPLES, seed=2)
    unknown = sorted(set(others) - {"backend/v1", "backend/v2"})
    if unknown:
        fail(f"canary: other requests reached {unknown}.",
             "every other request needs a route too (a last route without `match`), to subset v1 or v2.")
    share = others["backend/v2"] / _ROUTING_SAMPLES
    if abs(share - CANARY_SHARE) > _SHARE_TOLERANCE:
        fail(f"canary: {share:.0%} of other requests went to v2, not about {CANARY_SHARE:.0%}.",
             "weights are relative: each destination gets weight / (sum of weights) of the route's requests.")
    passed(f"canary: {TESTER} always on v2, about {CANARY_SHARE:.0%} of everyone else on v2")


# --- Exercise 2: enough retries, and what they cost ----------------------------------------


@dataclass(frozen=True)
class RetryTask:
    """Three pods that each fail `failure_rate` of requests, independently; with
    `retries: {attempts: N, retryOn: 5xx}` reach `target` success with the smallest N, and say
    how many tries per request that costs the service. The check runs the mesh simulator (the
    sidecar's own retry code) with these parameters."""

    hosts: int = 3
    failure_rate: float = 0.3
    target: float = 0.99
    duration: float = 100.0
    arrival_rate: float = 100.0
    seed: int = 4


RETRY_TASK = RetryTask()
_TRIES_TOLERANCE = 0.03  # the simulator's own sampling error is about 0.5 % with these parameters


def simulate_retries(attempts: int, task: RetryTask = RETRY_TASK) -> MeshSimResult:
    """The task's service with `attempts` retries on 5xx, in the mesh simulator."""
    return simulate_mesh(hosts=task.hosts, failing_hosts=task.hosts, failure_rate=task.failure_rate,
                         duration=task.duration, arrival_rate=task.arrival_rate, seed=task.seed,
                         retries={"attempts": attempts, "retryOn": "5xx"})


def check_retries(attempts: object, tries_per_request: object) -> None:
    """The smallest retry count meeting the target, and the mean tries per request it costs."""
    task = RETRY_TASK
    value = require_number("attempts", attempts)
    if value != int(value) or value < 0 or value > 20:
        fail(f"attempts: {value:g} is not a sensible number of retries.", "attempts counts retries: 0, 1, 2, ...")
    retries = int(value)
    tries = require_number("tries per request", tries_per_request)
    result = simulate_retries(retries)
    if result.success_rate < task.target:
        fail(f"attempts: with {retries} retries the simulated success rate is below {task.target:.0%}.",
             "a request fails only if ALL of its tries fail: with N retries that is failure_rate ** (N + 1). "
             "Find the smallest N that keeps it at most 1 - target.")
    if retries > 0 and simulate_retries(retries - 1).success_rate >= task.target:
        fail(f"attempts: {retries} works, but fewer retries would too.",
             "every retry adds load on a struggling service: find the SMALLEST number that meets the target.")
    passed(f"attempts: {retries} is the smallest number of retries that meets the target")
    check_close("tries per request", tries, result.mean_tries, rel_tol=_TRIES_TOLERANCE,
                hint="every request makes a first try; a retry happens only when all the tries before it "
                     "failed. Add up the probability of making each try: 1 + p + p**2 + ... up to N retries.")


# --- Exercise 3: read the response flags ---------------------------------------------------

FLAGS: dict[str, str] = {
    "the caller's sidecar answered from a fault.abort rule": "FI",
    "the connection pool was full (http1MaxPendingRequests)": "UO",
    "every endpoint of the destination was ejected": "UH",
    "the route's timeout expired": "UT",
    "retries were used up and the last try still failed": "URX",
    "no route of the VirtualService matched the request": "NR",
    "the request was held by a fault.delay rule": "DI",
}


def check_flags(answer: object) -> None:
    """Situation -> Envoy response flag (as in the access log and `response_flags`)."""
    check_choices("flags", answer, FLAGS,
                  hint="the flags are abbreviations: Fault Injected, Delay Injected, Upstream Overflow, "
                       "no Upstream Healthy, Upstream Timeout, Upstream Retry limit eXceeded, No Route.")
