# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] tags=["id-title"]
# # Lab 04 — Istio traffic management: routing, splitting, resilience, faults
#
# **What you will learn** (about 75 minutes)
#
# 1. Route requests by their content (a header) and split traffic between versions by weight,
#    with `VirtualService` and `DestinationRule` — Istio's own YAML.
# 2. Give calls a **timeout** and **retries**, and test them with **fault injection** (delays and
#    aborts) instead of waiting for a real outage.
# 3. Protect a service with a **circuit breaker** (connection-pool limits) and take a failing pod
#    out of rotation with **outlier detection**.
# 4. Explore, in a simulator that runs the sidecar's own policy code, how failure rate, retries,
#    pool limits and ejection trade success rate against latency and load.
#
# Each part reproduces one of Istio's tasks (istio.io → Tasks → Traffic Management) with its
# expected outcome, on the mesh-demo application (a Bookinfo in miniature) and on httpbin.

# %% [markdown] tags=["id-idea"]
# ## The idea
#
# Two kinds of objects, both applied to the **caller's** sidecar:
#
# - a **VirtualService** says *where* a request goes: an ordered list of HTTP routes, each with
#   conditions (`match` on URI, headers, query), destinations with weights, and what to do on
#   the way (`timeout`, `retries`, `fault`). The first matching route wins.
# - a **DestinationRule** says *how* to talk to a destination once chosen: named **subsets** of its
#   pods (by label), the load balancer, the **connection pool** limits (circuit breaker) and
#   **outlier detection**.
#
# ```mermaid
# flowchart LR
#     sleep -->|"Host: frontend"| fs["frontend's<br/>sidecar"]
#     fs -->|"VirtualService backend:<br/>match end-user? weights?<br/>timeout, retries, fault"| pick{subset}
#     pick -->|"DestinationRule backend:<br/>pool limits, ejection"| v1[backend v1]
#     pick --> v2[backend v2]
# ```
#
# Because these rules live in the caller's sidecar, the VirtualService for `backend` acts in
# the **frontend's** sidecar, and every caller keeps its own circuit-breaker counters.

# %% tags=["nbval-ignore-output", "id-setup"]
import json
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import yaml

import labkit
from labkit import load
from labkit.apps.mesh_demo_calls import DemoCaller
from labkit.apps.mesh_demo_deploy import demo_manifest
from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane

MANIFESTS = Path(labkit.__file__).resolve().parents[1] / "data" / "manifests"
VS = "networking.istio.io/v1/VirtualService"  # kind names for delete(): several API versions exist
DR = "networking.istio.io/v1/DestinationRule"

cluster = LocalCluster()
cluster.apply(demo_manifest())                        # frontend -> backend v1 / v2, with sidecars
cluster.apply(MANIFESTS / "istio-httpbin.yaml")       # Istio's httpbin sample
plane = control_plane(cluster)                        # the mesh's control plane, as istiod
sleep = plane.client()                                # Istio's sleep sample: a caller with a sidecar
# call(host, path, headers) -> (status, JSON body); backend_versions(n) counts who answered
demo = DemoCaller(sleep)
call, backend_versions = demo.call, demo.backend_versions
print(cluster.status())

# %% [markdown] tags=["id-routing-intro"]
# ## 1. Request routing by header
#
# Istio task *Request Routing*: route the user `jason` to `reviews` v2 and everyone else to v1.
# Here: the frontend forwards the `end-user` header to the backend (as Bookinfo's productpage
# does), and two objects do the routing — a DestinationRule naming the subsets, and a
# VirtualService whose first route matches the header:

# %% tags=["id-routing-yaml"]
print((MANIFESTS / "istio-backend-destination-rule.yaml").read_text())
print((MANIFESTS / "istio-backend-route-by-user.yaml").read_text())

# %% tags=["id-routing"]
cluster.apply([MANIFESTS / "istio-backend-destination-rule.yaml", MANIFESTS / "istio-backend-route-by-user.yaml"])
anonymous = backend_versions(20)
as_jason = backend_versions(20, {"end-user": "jason"})
print("anonymous:", dict(anonymous), "| end-user: jason:", dict(as_jason))
assert anonymous == Counter({"v1": 20}) and as_jason == Counter({"v2": 20})

# %% [markdown] tags=["id-routing-discuss"]
# Expected outcome (Istio's task): every anonymous request shows v1, every request of the
# logged-in `jason` shows v2. Nothing random: the routes are evaluated in order on each
# request, in the frontend's sidecar.

# %% [markdown] tags=["id-shift-intro"]
# ## 2. Traffic shifting: 90/10, then 50/50
#
# Istio task *Traffic Shifting*: move traffic from one version to another gradually — the
# canary release. Weights are relative, and the pick is **random per request**, so the split is
# only approximate for a few requests (Istio's own tests send 100 requests and accept ±10).

# %% tags=["nbval-ignore-output", "id-shift"]
shift = yaml.safe_load((MANIFESTS / "istio-backend-shift-90-10.yaml").read_text())
splits = {}
for v1_weight, v2_weight in ((90, 10), (50, 50)):
    shift["spec"]["http"][0]["route"][0]["weight"] = v1_weight
    shift["spec"]["http"][0]["route"][1]["weight"] = v2_weight
    cluster.apply(shift)
    splits[f"{v1_weight}/{v2_weight}"] = backend_versions(200)
for name, counts in splits.items():
    print(f"weights {name}: {dict(sorted(counts.items()))} -> v2 share {counts['v2'] / 200:.0%}")
fig, ax = plt.subplots(figsize=(6, 2.6), layout="constrained")
for i, counts in enumerate(splits.values()):
    ax.barh(i, counts["v1"], color="tab:blue", label="v1" if i == 0 else None)
    ax.barh(i, counts["v2"], left=counts["v1"], color="tab:orange", label="v2" if i == 0 else None)
ax.set(yticks=[0, 1], yticklabels=[f"weights {n}" for n in splits], xlabel="requests of 200")
ax.invert_yaxis()
ax.legend(loc="lower right")
plt.show()

# %% tags=["id-shift-check"]
assert 0.04 <= splits["90/10"]["v2"] / 200 <= 0.16
assert 0.40 <= splits["50/50"]["v2"] / 200 <= 0.60
print("✓ about 10 % of requests on v2 at 90/10, about half at 50/50")

# %% [markdown] tags=["id-timeout-intro"]
# ## 3. Request timeouts
#
# Istio task *Request Timeouts*: make a service slow with an injected delay, then set a timeout
# on the route that calls it. Istio sets **no** timeout by default (not even Envoy's 15 s).
#
# First a 1 s delay on every call to `backend` (a `fault.delay`, applied in the frontend's
# sidecar), and no timeout anywhere: the frontend waits.

# %% tags=["nbval-ignore-output", "id-timeout-slow"]
cluster.apply('''
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
spec:
  hosts: [backend]
  http:
    - fault:
        delay:
          fixedDelay: 1s
          percentage: {value: 100}
      route:
        - destination: {host: backend, subset: v1}
''')
started = time.monotonic()
slow_status, _ = call()
slow_seconds = time.monotonic() - started
print(f"{slow_status} after {slow_seconds:.2f} s")

# %% [markdown] tags=["id-timeout-intro-2"]
# Now a `timeout: 0.25s` on the route sleep uses to reach the frontend. sleep's sidecar gives up
# after 0.25 s and answers `504 upstream request timeout` itself, with response flag `UT`:

# %% tags=["nbval-ignore-output", "id-timeout"]
cluster.apply('''
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: frontend
spec:
  hosts: [frontend]
  http:
    - route:
        - destination: {host: frontend}
      timeout: 0.25s
''')
started = time.monotonic()
timeout_status, timeout_body = call()
timeout_seconds = time.monotonic() - started
print(f"{timeout_status} {timeout_body} after {timeout_seconds:.2f} s")
print(sleep.access_log(1)[0])

# %% tags=["id-timeout-check"]
assert slow_status == 200 and slow_seconds >= 1.0
assert (timeout_status, timeout_body) == (504, {"text": "upstream request timeout"})
assert timeout_seconds < slow_seconds
assert '" 504 UT ' in sleep.access_log(1)[0]
cluster.delete(VS, "frontend")
print("✓ without a timeout the caller waited the whole delay; with one it got 504 UT early")


# %% [markdown] tags=["id-fault-intro"]
# ## 4. Fault injection: delays and aborts for one user
#
# Istio task *Fault Injection*: inject faults for the test user only, to see how the application
# copes — without breaking anything for real users. A `fault` belongs to a route, so matching
# on `end-user: jason` confines it. First a 0.5 s delay, then an abort with HTTP 500:

# %% tags=["nbval-ignore-output", "id-fault-delay"]
def fault_for_jason(fault: dict) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "backend"},
        "spec": {"hosts": ["backend"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "fault": fault,
             "route": [{"destination": {"host": "backend", "subset": "v1"}}]},
            {"route": [{"destination": {"host": "backend", "subset": "v1"}}]},
        ]},
    }


cluster.apply(fault_for_jason({"delay": {"fixedDelay": "0.5s", "percentage": {"value": 100}}}))
latency = {}
for who, headers in (("anonymous", None), ("jason", {"end-user": "jason"})):
    started = time.monotonic()
    status, _ = call(headers=headers)
    latency[who] = time.monotonic() - started
    print(f"{who:>9}: {status} in {latency[who]:.2f} s")
assert latency["jason"] >= 0.5 > latency["anonymous"]

# %% tags=["nbval-ignore-output", "id-fault-abort"]
cluster.apply(fault_for_jason({"abort": {"httpStatus": 500, "percentage": {"value": 100}}}))
status_anonymous, _ = call()
status_jason, body_jason = call(headers={"end-user": "jason"})
print("anonymous:", status_anonymous)
print("jason:    ", status_jason, json.dumps(body_jason["upstreams"]))
print(plane.sidecar("frontend").access_log(2)[0])

# %% tags=["id-fault-abort-check"]
assert status_anonymous == 200 and status_jason == 500
assert body_jason["upstreams"][0] == {"url": "http://backend:9080/", "status": 500, "body": "fault filter abort"}
aborted = plane.sidecar("frontend").telemetry.metrics.total(reporter="source", response_flags="FI")
assert aborted >= 1
print("✓ jason's call to backend was aborted in the frontend's sidecar (500, 'fault filter abort', flag FI);")
print("  the backend never saw it, and everyone else was served normally")

# %% [markdown] tags=["id-fault-retry-intro"]
# **Injected faults are not retried.** Istio's VirtualService reference says so for the route's
# `fault` field: *timeouts and retries are not enabled when faults are injected on the client
# side* (istio.io, reference → networking → VirtualService → `HTTPRoute.fault`). A fault is a
# test of how the *caller* copes, so the caller's own retries must not hide it: an abort for
# 50 % of requests plus `retries: {attempts: 5, retryOn: 5xx}` still fails about half of them.
# (To test retries, make the *service* fail — next section.)

# %% tags=["nbval-ignore-output", "id-fault-retry"]
cluster.apply('''
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
spec:
  hosts: [backend]
  http:
    - fault:
        abort:
          httpStatus: 503
          percentage: {value: 50}
      retries:
        attempts: 5
        retryOn: 5xx
      route:
        - destination: {host: backend}
''')
aborted_half = load.run("http://frontend:9080/", requests=200, concurrency=1, proxy=sleep.outbound_url)
print(aborted_half.status_counts)

# %% tags=["id-fault-retry-check"]
assert 0.35 <= aborted_half.count(503) / aborted_half.requests <= 0.65
print("✓ about half failed despite 5 retries: injected aborts bypass the retry policy")

# %% [markdown] tags=["id-retry-intro"]
# ## 5. Retries against a real failure
#
# Now a real fault: deploy backend v2 again with `FAIL_PERCENT=50` (the app itself answers 503
# to half of its requests), route to the whole `backend` service, and compare no VirtualService
# (Istio's default retry policy, which since 1.24 does not retry an app's 503) with
# `retries: {attempts: 2, retryOn: 5xx}`.

# %% tags=["nbval-ignore-output", "id-retry"]
cluster.delete(VS, "backend")
cluster.apply(demo_manifest(names=["backend-v2"], env={"backend-v2": {"FAIL_PERCENT": "50"}}))
no_retries = load.run("http://frontend:9080/", requests=200, concurrency=1, proxy=sleep.outbound_url)
cluster.apply('''
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
spec:
  hosts: [backend]
  http:
    - route:
        - destination: {host: backend}
      retries:
        attempts: 2
        retryOn: 5xx
''')
v2_before = plane.sidecar("backend-v2").telemetry.metrics.total(reporter="destination")
with_retries = load.run("http://frontend:9080/", requests=200, concurrency=1, proxy=sleep.outbound_url)
v2_tries = plane.sidecar("backend-v2").telemetry.metrics.total(reporter="destination") - v2_before
print("default policy:", no_retries.status_counts, f"p99 {no_retries.percentile(99) * 1000:.1f} ms")
print("2 retries:     ", with_retries.status_counts, f"p99 {with_retries.percentile(99) * 1000:.1f} ms")
print(f"backend-v2 received {v2_tries} tries for those 200 requests")

# %% tags=["id-retry-check"]
assert no_retries.count(503) > 10 and with_retries.success_rate >= 0.98
print("✓ the default policy let the 503s through; 2 retries on 5xx hid them (at the cost of extra tries)")

# %% [markdown] tags=["id-cb-intro"]
# ## 6. Circuit breaking
#
# Istio task *Circuit Breaking*, with its DestinationRule for httpbin: **one** connection, **one**
# pending request, **one** request per connection. The caller's sidecar refuses anything beyond
# that at once: `503` with `x-envoy-overloaded: true` and flag `UO` — the circuit is open, and
# the struggling service is not asked at all. The task drives it with fortio at concurrency 2,
# then 3; we use `labkit.load` the same way, from sleep's sidecar.

# %% tags=["id-cb-yaml"]
print((MANIFESTS / "istio-httpbin-circuit-breaker.yaml").read_text())

# %% tags=["nbval-ignore-output", "id-cb"]
cluster.apply(MANIFESTS / "istio-httpbin-circuit-breaker.yaml")
uo_before = sleep.telemetry.metrics.total(reporter="source", response_flags="UO")
breaker = {c: load.run("http://httpbin:8000/get", requests=n, concurrency=c, proxy=sleep.outbound_url)
           for c, n in ((1, 20), (2, 20), (3, 30))}
uo_after = sleep.telemetry.metrics.total(reporter="source", response_flags="UO")
for c, r in breaker.items():
    print(f"concurrency {c}: {r.requests} calls -> {r.status_counts}")
stats = next(cl["stats"] for cl in sleep.config()["clusters"] if "httpbin" in cl["name"])
print("sleep's sidecar, cluster httpbin:", stats)

# %% tags=["id-cb-check"]
overflowed = sum(r.count(503) for r in breaker.values())
assert breaker[1].status_counts == {200: 20}
assert breaker[3].count(503) > 0
assert uo_after - uo_before == overflowed  # every 503 was the circuit breaker (UO), none came from httpbin
print("✓ one request at a time passes; at concurrency 3 the pool overflows and the sidecar answers 503 UO")

# %% [markdown] tags=["id-cb-discuss"]
# Istio's task reports a few 503s already at concurrency 2 ("istio-proxy does allow for some
# leeway") and most calls refused at concurrency 3. The exact numbers differ between runs and
# machines: a refused request comes back in microseconds, so its
# client sends the next one at once and the fast failures pile up, while the one request in
# flight takes a full round trip. What does not change: the limits are **per caller sidecar**
# and per destination, overflow is **never retried**, and httpbin itself never saw those
# requests — they are in sleep's `upstream_rq_pending_overflow`, not in httpbin's metrics.

# %% [markdown] tags=["id-outlier-intro"]
# ## 7. Outlier detection: ejecting a failing pod
#
# Retries hide failures but keep sending traffic to the failing pod. **Outlier detection**
# (passive health checking) removes it: after `consecutive5xxErrors` errors in a row from one
# pod, the caller's sidecar ejects that pod for `baseEjectionTime` (longer each time it is
# ejected again), checking every `interval`. Make backend v2 fail **every** request and compare:

# %% tags=["nbval-ignore-output", "id-outlier"]
cluster.delete(VS, "backend")
cluster.apply(demo_manifest(names=["backend-v2"], env={"backend-v2": {"FAIL_PERCENT": "100"}}))
without_ejection = load.run("http://frontend:9080/", requests=100, concurrency=1, proxy=sleep.outbound_url)
cluster.apply('''
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: backend
spec:
  host: backend
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
''')
with_ejection = load.run("http://frontend:9080/", requests=100, concurrency=1, proxy=sleep.outbound_url)
backend_cluster = next(cl for cl in plane.sidecar("frontend").config()["clusters"]
                       if cl["name"] == "outbound|9080||backend.default.svc.cluster.local")
print("without outlier detection:", without_ejection.status_counts)
print("with outlier detection:   ", with_ejection.status_counts)
print({e["workload"]: "ejected" if e["ejected"] else "in rotation" for e in backend_cluster["endpoints"]})

# %% tags=["id-outlier-check"]
assert without_ejection.count(503) > 30 and with_ejection.count(503) <= 3
assert {e["workload"]: e["ejected"] for e in backend_cluster["endpoints"]} == {"backend-v1": False,
                                                                               "backend-v2": True}
EXPORTED = Path("exported/lab04")  # for "On a real cluster" below
cluster.export(EXPORTED)
cluster.close()
print("✓ after its first 503, backend-v2 was ejected and the frontend's sidecar sent everything to v1")

# %% [markdown] tags=["id-explore-intro"]
# ## Explore: the mesh dashboard
#
# The live cluster shows each mechanism once. To see how they trade off — how much retries
# help, what they cost, when a circuit breaker sheds load, how fast ejection reacts — use the
# simulator. `labkit.sim.simulate_mesh` models one client sidecar in front of a service with a
# few pods, some of them failing, and makes every decision with the **same policy code** as the
# live sidecar (retries with back-off, connection pool, outlier detection, least-request load
# balancing), in simulated time.
#
# Things to try:
#
# - One of three pods fails 50 % of requests. Raise `retries.attempts` from 0 to 2: what
#   happens to the success rate, the p99 latency, and the tries per request?
# - Set `failure rate` to 1.0 and tick `outlierDetection`: watch the load on the failing host
#   drop to almost nothing. Now set `maxEjectionPercent` to 10 with 2 failing hosts of 4.
# - Set `maxConnections` and `http1MaxPendingRequests` to 1 and raise the request rate:
#   where do the `UO` 503s start?
# - Make every pod fail (`failing hosts` = `hosts`) with ejection on: what does `UH` mean?

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.mesh import mesh_dashboard

dash = mesh_dashboard(failure_rate=0.5)
dash

# %% [markdown] tags=["id-dashboard-drive-intro"]
# Cells can drive it too: this one switches on two retries, the next reads the result.

# %% tags=["nbval-ignore-output", "id-dashboard-drive"]
no_retry = dash.result
dash.set(attempts=2, retry_on="5xx")

# %% tags=["id-dashboard-state"]
retried = dash.result
assert retried.success_rate > no_retry.success_rate and retried.mean_tries > no_retry.mean_tries
print(f"no retries: {no_retry.success_rate:.1%} success, {no_retry.mean_tries:.2f} tries/request, "
      f"p99 {no_retry.latency_p99 * 1000:.1f} ms")
print(f"2 retries:  {retried.success_rate:.1%} success, {retried.mean_tries:.2f} tries/request, "
      f"p99 {retried.latency_p99 * 1000:.1f} ms")

# %% [markdown] tags=["id-exercise-1"]
# ## Exercises
#
# ### Exercise 1 — a canary with a tester (3 points)
#
# Write the `spec` of a VirtualService for `backend` (as a dict shaped like the YAML under
# `spec:`) that sends the tester `jason` (header `end-user`) **always** to subset `v2`, and
# `CANARY_SHARE` (25 %) of everyone else's requests to `v2`, the rest to `v1`. The check routes
# thousands of requests with the sidecar's own routing code.

# %% tags=["id-exercise-1-solution"]
from labkit.grading.lab04 import CANARY_SHARE, TESTER

### BEGIN SOLUTION
v2_weight = round(100 * CANARY_SHARE)
canary = {
    "hosts": ["backend"],
    "http": [
        {"match": [{"headers": {"end-user": {"exact": TESTER}}}],
         "route": [{"destination": {"host": "backend", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "backend", "subset": "v1"}, "weight": 100 - v2_weight},
                   {"destination": {"host": "backend", "subset": "v2"}, "weight": v2_weight}]},
    ],
}
### END SOLUTION

# %% tags=["check", "points-3", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab04 import check_canary

check_canary(answer("canary"))

# %% [markdown] tags=["id-exercise-2"]
# ### Exercise 2 — just enough retries, and what they cost (2 points)
#
# `RETRY_TASK` describes a service whose 3 pods each fail `failure_rate` (30 %) of requests,
# independently of each other and of earlier tries. With `retries: {attempts: N, retryOn: 5xx}`:
#
# 1. What is the **smallest** N that gives at least `target` (99 %) success? Store it in
#    `retry_attempts`.
# 2. Retries are extra load on a service that is already failing. With that N, how many tries
#    does one request make **on average**? Store it in `tries_per_request`.
#
# Reason it out with the failure rate (when does a request fail? when is a retry made?). The
# check runs the mesh simulator, whose retries are the sidecar's own code, with the task's
# parameters; the dashboard above shows the same quantities (success, tries per request).

# %% tags=["id-exercise-2-solution"]
from labkit.grading.lab04 import RETRY_TASK

print(RETRY_TASK)
p = RETRY_TASK.failure_rate
### BEGIN SOLUTION
# A request fails only if its first try and all N retries fail: p ** (N + 1).
retry_attempts = next(n for n in range(20) if 1 - p ** (n + 1) >= RETRY_TASK.target)
# Try k + 1 happens only if the k tries before it all failed: 1 + p + ... + p ** N.
tries_per_request = sum(p**k for k in range(retry_attempts + 1))
### END SOLUTION
print(f"{retry_attempts} retries: {1 - p ** (retry_attempts + 1):.2%} success, "
      f"{tries_per_request:.3f} tries per request")

# %% tags=["check", "points-2", "id-exercise-2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab04 import check_retries

check_retries(answer("retry_attempts"), answer("tries_per_request"))

# %% [markdown] tags=["id-exercise-3"]
# ### Exercise 3 — read the response flags (2 points)
#
# Envoy marks each request in its access log and in `istio_requests_total{response_flags}`
# with what happened to it. Map each situation you met in this lab to its flag: one of
# `"FI"`, `"DI"`, `"UO"`, `"UH"`, `"UT"`, `"URX"`, `"NR"`.

# %% tags=["id-exercise-3-solution"]
from labkit.grading.lab04 import FLAGS

for situation in FLAGS:
    print("-", situation)
### BEGIN SOLUTION
flags = {
    "the caller's sidecar answered from a fault.abort rule": "FI",
    "the connection pool was full (http1MaxPendingRequests)": "UO",
    "every endpoint of the destination was ejected": "UH",
    "the route's timeout expired": "UT",
    "retries were used up and the last try still failed": "URX",
    "no route of the VirtualService matched the request": "NR",
    "the request was held by a fault.delay rule": "DI",
}
### END SOLUTION

# %% tags=["check", "points-2", "id-exercise-3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab04 import check_flags

check_flags(answer("flags"))

# %% [markdown] tags=["id-real-cluster"]
# ## On a real cluster
#
# The YAML in this lab is Istio's own. Before the live part closed, `cluster.export("exported/lab04")`
# wrote what the cluster held at its end: mesh-demo and Istio's httpbin sample, the two
# `DestinationRule`s still applied (circuit breaking on httpbin, outlier detection on backend),
# the namespace labelled for sidecar injection, and a `Dockerfile` for mesh-demo, labkit's own
# program:

# %% tags=["id-real-cluster-export"]
print((EXPORTED / "README.txt").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# Step 1's `docker build` runs in the labkit checkout (the folder above this one), with
# `-f labs/exported/lab04/Dockerfile`. Then, in a terminal in this folder (`labs/`), on a cluster
# with Istio (`../tools/real-cluster.sh exported/lab04` installs it and applies the folder), apply
# the export and replay the tasks with Istio's own clients:
#
# ```bash
# kubectl apply -f exported/lab04/
# kubectl apply -f https://raw.githubusercontent.com/istio/istio/1.30.3/samples/sleep/sleep.yaml
# kubectl apply -f ../data/manifests/istio-backend-destination-rule.yaml -f ../data/manifests/istio-backend-route-by-user.yaml
# kubectl exec deploy/sleep -- curl -s -H 'end-user: jason' http://frontend:9080/
# kubectl apply -f ../data/manifests/istio-httpbin-circuit-breaker.yaml
# kubectl apply -f https://raw.githubusercontent.com/istio/istio/1.30.3/samples/httpbin/sample-client/fortio-deploy.yaml
# kubectl exec deploy/fortio-deploy -c fortio -- /usr/bin/fortio load -c 3 -qps 0 -n 30 -loglevel Warning http://httpbin:8000/get
# kubectl exec deploy/fortio-deploy -c istio-proxy -- pilot-agent request GET stats | grep httpbin | grep pending
# ```
#
# What differs from the laptop:
#
# - **Propagation** takes up to a few seconds (istiod → every Envoy); Istio's docs wait before
#   checking. labkit pushes synchronously.
# - **Per-pod state.** Each client *pod* has its own circuit-breaker counters and ejection state;
#   in labkit one sidecar serves all pods of a workload.
# - **Envoy's leeway** in circuit breaking differs (C++ and threads), so the number of 503s in
#   the fortio run differs; the mechanism is the same.
# - **Bookinfo** has more services (productpage, details, reviews v1–v3, ratings); the task texts
#   name those. mesh-demo keeps the same shape with two services.

# %% [markdown] tags=["id-summary-intro"]
# ## Summary
#
# The question: *what traffic-management features does Istio provide, and how are they
# useful?* From your numbers:

# %% tags=["nbval-ignore-output", "id-summary"]
print(f"- Routing by header: jason -> {dict(as_jason)}, everyone else -> {dict(anonymous)}.")
print(f"- Traffic shifting: v2 got {splits['90/10']['v2'] / 200:.0%} at 90/10 and "
      f"{splits['50/50']['v2'] / 200:.0%} at 50/50 — a canary release without redeploying anything.")
print(f"- A 0.25 s timeout turned a {slow_seconds:.1f} s wait into a {timeout_seconds:.2f} s 504 (UT).")
print(f"- Fault injection made jason's calls fail ({status_jason}) or wait, for him only; "
      f"injected aborts were not retried ({aborted_half.count(503) / aborted_half.requests:.0%} still failed).")
print(f"- Retries on 5xx took a flaky v2 from {no_retries.success_rate:.0%} to {with_retries.success_rate:.0%} success.")
print(f"- The circuit breaker refused {breaker[3].count(503)} of {breaker[3].requests} calls at concurrency 3 (UO), "
      f"sparing httpbin; outlier detection cut failures from {without_ejection.count(503)} to "
      f"{with_ejection.count(503)} per 100 by ejecting the failing pod.")

# %% [markdown] tags=["id-summary-end"]
# Istio's traffic management moves the *how* of every call into configuration: **routing** and
# **splitting** make releases gradual and testable (a canary for 10 %, a header for testers),
# **timeouts** and **retries** turn slow or flaky dependencies into bounded, mostly-successful
# calls, **circuit breaking** and **outlier detection** stop one struggling pod from dragging the
# rest down, and **fault injection** lets you prove all of that before a real outage does. The
# same YAML works for every service, in every language — and each mechanism has a cost you
# measured: retries add load and latency, breakers reject work, ejection removes capacity.
