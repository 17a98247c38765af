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
# # Lab 03 — The sidecar proxy: data plane and control plane
#
# **What you will learn** (about 50 minutes)
#
# 1. Explain what a sidecar proxy is and how it comes to see **all** inbound and outbound traffic
#    of its workload, without changes to the application.
# 2. Find the sidecar's traces in a request: the headers it adds, the log lines it writes on both
#    sides of a call.
# 3. Tell the **data plane** (the proxies) from the **control plane** (istiod), and watch the
#    control plane push new configuration to running proxies without dropping a request.
# 4. Read a sidecar's configuration, as `istioctl proxy-config` does.
# 5. Measure what a sidecar costs in latency per hop, with and without mutual TLS, and scale
#    that cost up to a call tree in a dashboard (latency and CPU).

# %% [markdown] tags=["id-idea"]
# ## The idea
#
# A **sidecar** is a second container in every pod of the application — in Istio, the Envoy
# proxy `istio-proxy`. The pod's network is rewired so that every connection the app opens
# goes out through the proxy (**outbound**), and every connection to the app comes in through it
# (**inbound**). The app still calls `http://httpbin:8000/get` and still listens on its port;
# it does not know the proxy is there.
#
# ```mermaid
# flowchart LR
#     subgraph podA["pod: sleep"]
#         appA[app] -- "http://httpbin:8000/get" --> outA["sidecar<br/>outbound"]
#     end
#     subgraph podB["pod: httpbin"]
#         inB["sidecar<br/>inbound"] --> appB["app :8080"]
#     end
#     outA == "mTLS" ==> inB
#     cp[("control plane<br/>(istiod)")] -. "routes, clusters, endpoints,<br/>policies, certificates (xDS)" .-> outA & inB
# ```
#
# The proxies are the **data plane**: they touch every request. The **control plane** never
# sees a request: it watches the cluster (Services, pods, Istio's YAML), computes each proxy's
# configuration and certificates, and pushes them over the xDS protocol.
#
# In Istio the rewiring is done by iptables rules that an init container (or the CNI plugin)
# installs in the pod: outbound TCP is redirected to Envoy's port 15001, inbound to 15006.
# labkit has no pod network to rewire, so it does the two halves explicitly: the app's
# container gets `HTTP_PROXY` pointing at its sidecar's outbound listener, and the pod's
# endpoint (what other sidecars connect to) is the sidecar's inbound listener, which forwards
# to the app.

# %% tags=["id-setup"]
import json
import time
import urllib.request
from pathlib import Path

import matplotlib.pyplot as plt
import yaml

import labkit
from labkit import load
from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane

MANIFESTS = Path(labkit.__file__).resolve().parents[1] / "data" / "manifests"
HTTPBIN = list(yaml.safe_load_all((MANIFESTS / "istio-httpbin.yaml").read_text()))


def get(base_url: str, path: str, host: str | None = None) -> dict:
    """GET base_url + path (Host: `host`, the service name a sidecar routes by) as JSON."""
    headers = {"Host": host} if host else {}
    with urllib.request.urlopen(urllib.request.Request(base_url + path, headers=headers), timeout=10) as r:
        return json.loads(r.read())


print([d["kind"] for d in HTTPBIN])

# %% [markdown] tags=["id-inject-intro"]
# ## Run it: injection
#
# `data/manifests/istio-httpbin.yaml` is Istio's `httpbin` sample: a Deployment, a Service on
# port 8000, and the namespace label `istio-injection: enabled`. When the Deployment is
# applied, the control plane — like Istio's mutating admission webhook — changes it on the way
# in. Compare what we wrote with what the cluster stored:

# %% tags=["nbval-ignore-output", "id-inject"]
cluster = LocalCluster()
cluster.apply(HTTPBIN)
plane = control_plane(cluster)  # the mesh's control plane, as istiod
sleep = plane.client()  # Istio's `sleep` sample: a caller with its own sidecar
written = HTTPBIN[2]["spec"]["template"]["spec"]["containers"][0].get("env", [])
stored = cluster.get("Deployment", "httpbin").object.spec.template.spec.containers[0].env
print("env as written:", written)
print("env as stored: ", [(e.name, e.value) for e in stored])

# %% tags=["id-inject-check"]
assert written == [] and [e.name for e in stored] == ["HTTP_PROXY"]
httpbin_sidecar = plane.sidecar("httpbin")
assert stored[0].value == httpbin_sidecar.outbound_url
print("✓ the stored Deployment points its app at its sidecar's outbound listener")

# %% [markdown] tags=["id-inbound-intro"]
# ## Inbound: what the app receives
#
# httpbin's `/headers` echoes the headers of the request it got. Call it through the mesh (from
# `sleep`'s sidecar, by service name), then directly on the app's own port, bypassing both
# sidecars:

# %% tags=["nbval-ignore-output", "id-inbound"]
through_mesh = get(sleep.outbound_url, "/headers", host="httpbin:8000")["headers"]
app_port_url = cluster.pods_of({"app": "httpbin"})[0].replica.url
direct = get(app_port_url, "/headers")["headers"]
print("through the sidecars:", json.dumps(through_mesh, indent=1))
print("directly to the app: ", json.dumps(direct, indent=1))

# %% tags=["nbval-ignore-output", "id-inbound-check"]
added = sorted(set(through_mesh) - set(direct))
print("headers only the sidecars added:", added)
assert {"X-Request-Id", "Traceparent", "X-Forwarded-Client-Cert"} <= set(added)
assert through_mesh["X-Forwarded-Client-Cert"].endswith("URI=spiffe://cluster.local/ns/default/sa/sleep")

# %% [markdown] tags=["id-inbound-discuss"]
# The app did nothing, yet it received:
#
# - `X-Request-Id` — created by sleep's sidecar (Envoy generates one for every request), so both
#   sides' logs can be joined;
# - `Traceparent` — a W3C trace context. labkit's sidecars always trace; Istio's add trace headers
#   only when a tracing provider is configured (none by default since Istio 1.22; with one, e.g.
#   Zipkin, you see `X-B3-Traceid` and friends, sampled at 1 % by default);
# - `X-Forwarded-Client-Cert` — added by httpbin's sidecar after the mutual TLS handshake:
#   `By=` its own identity, `URI=` the caller's (`sa/sleep`), `Hash=` the caller certificate's
#   SHA-256. Istio's documentation uses exactly this header to prove that mTLS was used;
# - `X-Envoy-Attempt-Count` — which try this was (retries would count up).
#
# Both sidecars also **log** the request. The same request id appears in sleep's outbound log
# (cluster `outbound|8000||httpbin...`) and in httpbin's inbound log (`inbound|...`):

# %% tags=["nbval-ignore-output", "id-logs"]
request_id = through_mesh["X-Request-Id"]
for name, proxy in (("sleep (outbound)", sleep), ("httpbin (inbound)", httpbin_sidecar)):
    lines = [line for line in proxy.access_log() if request_id in line]
    print(f"{name}:\n  {lines[0]}")

# %% tags=["id-logs-check"]
assert any(request_id in line and "outbound|8000||httpbin.default.svc.cluster.local" in line for line in sleep.access_log())
assert any(request_id in line and "inbound|" in line for line in httpbin_sidecar.access_log())
print("✓ one request, two log lines: the caller's sidecar (outbound) and the callee's (inbound)")

# %% [markdown] tags=["id-control-intro"]
# ## The control plane pushes configuration
#
# `proxy_status()` is `istioctl proxy-status`: every sidecar the control plane manages and the
# version of the configuration it runs.

# %% tags=["nbval-ignore-output", "id-status-before"]
for row in plane.proxy_status():
    print(row["workload"], "config version", row["version"], "synced" if row["synced"] else "STALE")
version_before = plane.version

# %% [markdown] tags=["id-push-intro"]
# Now apply a `VirtualService` **while traffic flows**: a background load of 600 requests to
# httpbin runs while we apply three versions of a route that adds a response header. Envoy
# takes new configuration without a restart and lets requests in flight finish with the
# configuration they started with; labkit's sidecars do the same.

# %% tags=["nbval-ignore-output", "id-push"]
from concurrent.futures import ThreadPoolExecutor


def route(label: str) -> str:
    return f'''
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts: [httpbin]
  http:
    - route:
        - destination: {{host: httpbin}}
      headers:
        response:
          set: {{x-lab-route: "{label}"}}
'''


with ThreadPoolExecutor(1) as pool:
    background = pool.submit(load.run, "http://httpbin:8000/get", requests=600, concurrency=2, qps=300,
                             proxy=sleep.outbound_url)
    for label in ("one", "two", "three"):
        cluster.apply(route(label))
        time.sleep(0.3)  # let traffic run on this version (pacing the demo, not synchronising)
    during = background.result()
pushes_during = plane.version - version_before
with urllib.request.urlopen(urllib.request.Request(sleep.outbound_url + "/get",
                                                   headers={"Host": "httpbin:8000"})) as r:
    route_header = r.headers["x-lab-route"]
print("during the pushes:", during.status_counts, "| after: x-lab-route =", route_header)
for row in plane.proxy_status():
    print(row["workload"], "config version", row["version"], "synced" if row["synced"] else "STALE")

# %% tags=["id-push-check"]
assert during.status_counts == {200: 600}
assert route_header == "three"
assert pushes_during >= 3
assert all(row["synced"] for row in plane.proxy_status())
print("✓ three configuration pushes, 600 requests in flight, not one failed; every sidecar is in sync")

# %% [markdown] tags=["id-config-intro"]
# ## Reading a sidecar's configuration
#
# `sidecar.config()` is `istioctl proxy-config all`: the listeners, the routes (from
# VirtualServices), the clusters (one per destination service and subset, with their load
# balancer, circuit-breaker limits, endpoints and statistics) and the security settings.
# Here is what `sleep`'s sidecar runs now:

# %% tags=["nbval-ignore-output", "id-config"]
config = sleep.config()
print("routes:  ", json.dumps(config["routes"]))
print("services:", json.dumps(config["services"]))
print("security:", json.dumps(config["security"]))
print("cluster: ", json.dumps(config["clusters"][0], indent=1)[:1500])

# %% tags=["id-config-check"]
httpbin_cluster = next(c for c in config["clusters"] if c["name"] == "outbound|8000||httpbin.default.svc.cluster.local")
assert httpbin_cluster["loadBalancer"] == "LeastRequest"  # Istio's default since 1.14
assert all(e["mtls"] for e in httpbin_cluster["endpoints"])  # auto mTLS: the endpoint has a sidecar
assert config["routes"][0]["name"] == "httpbin"
print("✓ sleep's sidecar routes httpbin with LEAST_REQUEST over mTLS, per the VirtualService 'httpbin'")

# %% [markdown] tags=["id-overhead-intro"]
# ## What a sidecar costs
#
# Every request now crosses two extra proxies. Measure it with `labkit.load` at concurrency 1
# (so queueing does not blur the numbers): 2,000 requests each
#
# 1. **direct** to the app's own port — no sidecar;
# 2. to httpbin's **inbound** listener — one sidecar;
# 3. from **sleep's sidecar to httpbin's** — two sidecars, with mutual TLS between them;
# 4. the same two hops with mTLS **off** (a `PeerAuthentication` with mode `DISABLE` on httpbin:
#    auto-mTLS then sends plaintext).
#
# Your numbers depend on your machine; nbval does not compare them, the check after the table
# asserts only the order.

# %% tags=["nbval-ignore-output", "id-overhead"]
cluster.delete("networking.istio.io/v1/VirtualService", "httpbin")
# load.compare sends the 2000 requests of each path in 10 turns, path after path, so that the
# machine getting busier or quieter meanwhile weighs on every path alike.
runs = load.compare({
    "direct to the app": {"url": app_port_url + "/get"},
    "1 sidecar (inbound)": {"url": httpbin_sidecar.inbound_url + "/get", "headers": {"Host": "httpbin:8000"}},
    "2 sidecars, mTLS": {"url": "http://httpbin:8000/get", "proxy": sleep.outbound_url},
}, requests=2000, concurrency=1)
cluster.apply('''
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin-plaintext
spec:
  selector:
    matchLabels: {app: httpbin}
  mtls:
    mode: DISABLE
''')
runs["2 sidecars, plaintext"] = load.run("http://httpbin:8000/get", requests=2000, concurrency=1,
                                         proxy=sleep.outbound_url)
print(f"{'path':<24} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>8}")
for name, r in runs.items():
    print(f"{name:<24} {r.percentile(50) * 1000:8.3f} {r.percentile(90) * 1000:8.3f} "
          f"{r.percentile(99) * 1000:8.3f} {r.actual_qps:8.0f}")
fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
for name, r in runs.items():
    ordered = sorted(r.latencies)
    ax.plot([x * 1000 for x in ordered], [i / len(ordered) for i in range(len(ordered))], label=name)
ax.set(xscale="log", xlabel="latency (ms, log scale)", ylabel="share of requests", title="latency CDF")
ax.legend()
plt.show()

# %% tags=["id-overhead-check"]
direct, one_hop, two_hops = (runs[k] for k in ("direct to the app", "1 sidecar (inbound)", "2 sidecars, mTLS"))
assert all(r.status_counts == {200: 2000} for r in runs.values())
assert direct.percentile(50) < one_hop.percentile(50) < two_hops.percentile(50)
print("✓ each sidecar on the path adds latency: direct < one sidecar < two sidecars (medians)")

# %% [markdown] tags=["id-overhead-discuss"]
# Read the table as Istio's performance page does: what matters is the **added** latency per
# hop, at the median and in the tail. For Istio 1.24 that page
# (https://istio.io/v1.24/docs/ops/deployment/performance-and-scalability/) reports a sidecar
# (Envoy, C++, 2 worker threads) at 1,000 requests per second with 1 KB payloads using about
# 0.20 vCPU and 60 MB of memory, and shows its latency only as charts: the P90 and P99 of requests
# through a client and a server sidecar with mTLS, against no mesh, at 500 to 1,500 requests per
# second — no single per-hop figure. (The pages of Istio 1.8 to 1.16 quoted one: the proxies added
# 2.65 ms to the 90th percentile.) labkit's sidecar is Python, so expect more here, and far less throughput than Envoy: on two cores one labkit sidecar passes
# about a quarter to half of what a direct call reaches (`bench/README.md` has the numbers and
# why) — but the shape is the same: a fraction of a millisecond per hop, small for
# a service that takes tens of milliseconds, large for one that takes tens of microseconds;
# mTLS costs a little more than plaintext (the encryption; the handshake happens once per
# kept-alive connection); and every pod pays memory and CPU for its proxy.

# %% [markdown] tags=["id-dashboard-intro"]
# ## Explore: sidecar cost at scale
#
# One hop is small. An application is a tree of calls: a request enters one service, which calls
# others in parallel, which call more. Every call crosses two sidecars, parallel calls cost their
# *slowest* branch, and every hop burns proxy CPU. The dashboard takes **your** per-hop cost — the
# distribution of (two sidecars − direct) / 2 from your runs above, with mTLS and in plaintext — and
# simulates requests through a call tree (`labkit.sim.sidecars`): depth, fan-out, the app's own time
# per service, the request rate, and the sidecar's CPU per hop (default: Istio 1.24's 0.20 vCPU per
# 1,000 requests per second, i.e. 0.2 ms of CPU per request per sidecar). Try: depth 1 vs 5 at fan-out 1;
# fan-out 4 (the p99 grows faster than the p50); app time 0 (a cache lookup) vs 50 ms; 10,000
# requests per second.

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.sim.sidecars import hop_quantiles
from labkit.widgets.sidecar_cost import sidecar_cost_dashboard

HOP_MS = {mode: hop_quantiles(runs["direct to the app"].latencies, runs[f"2 sidecars, {mode}"].latencies, hops=2) * 1000
          for mode in ("mTLS", "plaintext")}
print(f"your per-hop cost, median: {HOP_MS['mTLS'][100]:.3f} ms with mTLS, {HOP_MS['plaintext'][100]:.3f} ms plaintext")
scale = sidecar_cost_dashboard(HOP_MS["mTLS"], HOP_MS["plaintext"])
scale

# %% tags=["nbval-ignore-output", "id-dashboard-check"]
shallow = scale.result
scale.set(depth=5, fanout=2)  # what moving the sliders runs
deep = scale.result
assert deep.calls == 62 and deep.added(50) > shallow.added(50)
assert deep.sidecar_cpu_cores > shallow.sidecar_cpu_cores
scale.set(depth=2, fanout=2)
print(f"✓ 62 calls per request instead of {shallow.calls}: the sidecars add "
      f"{deep.added(50) / shallow.added(50):.1f}x the latency and {deep.sidecar_cpu_cores / shallow.sidecar_cpu_cores:.0f}x the CPU")

# %% [markdown] tags=["id-exercise-1"]
# ## Exercises
#
# ### Exercise 1 — data plane or control plane? (2 points)
#
# For each job, say whether the **data plane** (the sidecars) or the **control plane** (istiod)
# does it.

# %% tags=["id-exercise-1-solution"]
from labkit.grading.lab03 import PLANES, check_planes

for job in PLANES:
    print("-", job)
### BEGIN SOLUTION
planes = {
    "forwarding a request to one of httpbin's pods": "data plane",
    "the TLS handshake between two sidecars": "data plane",
    "signing a workload's certificate": "control plane",
    "turning a VirtualService into routes for every sidecar": "control plane",
    "retrying a request that failed": "data plane",
    "writing an access-log line": "data plane",
    "telling sidecars that a new pod is ready (endpoints)": "control plane",
    "counting istio_requests_total": "data plane",
}
### END SOLUTION

# %% tags=["check", "points-2", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab03 import check_planes

check_planes(answer("planes"))

# %% [markdown] tags=["id-exercise-2"]
# ### Exercise 2 — the cost of one hop (2 points)
#
# From **your** measurements above (`runs`), compute the median latency that **one** sidecar
# hop adds, in milliseconds: compare *direct to the app* with *2 sidecars, mTLS* (two hops).

# %% tags=["nbval-ignore-output", "id-exercise-2-solution"]
from labkit.grading.lab03 import check_hop_overhead

direct, meshed = runs["direct to the app"], runs["2 sidecars, mTLS"]
### BEGIN SOLUTION
overhead_per_hop_ms = (meshed.percentile(50) - direct.percentile(50)) / 2 * 1000
### END SOLUTION
print(f"one sidecar hop adds about {overhead_per_hop_ms:.3f} ms at the median")

# %% tags=["check", "points-2", "id-exercise-2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab03 import check_hop_overhead

check_hop_overhead(answer("overhead_per_hop_ms"), answer("direct"), answer("meshed"), hops=2)

# %% [markdown] tags=["id-exercise-3"]
# ### Exercise 3 — endpoints pushed by the control plane (2 points)
#
# Scale httpbin to `SCALED_REPLICAS` (3) pods by applying its Deployment again with a new
# `replicas` (start from `HTTPBIN`, the manifest's documents). Then read, from **sleep's
# sidecar configuration**, the list of addresses it would now send httpbin requests to, and
# store it in `endpoints`. You did not touch sleep: the control plane told its sidecar.

# %% tags=["id-exercise-3-solution"]
import copy

from labkit.grading.lab03 import HTTPBIN_FQDN, SCALED_REPLICAS, check_endpoints

### BEGIN SOLUTION
scaled = copy.deepcopy(HTTPBIN)
next(d for d in scaled if d["kind"] == "Deployment")["spec"]["replicas"] = SCALED_REPLICAS
cluster.apply(scaled)
endpoints = sleep.config()["services"][HTTPBIN_FQDN]
### END SOLUTION
print(len(endpoints), "endpoints")

# %% tags=["check", "points-2", "id-exercise-3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab03 import check_endpoints

check_endpoints(answer("endpoints"), answer("sleep").config())

# %% [markdown] tags=["id-real-cluster"]
# ## On a real cluster
#
# `cluster.export(DIR)` writes what this lab's cluster holds (Istio's httpbin sample, scaled by
# exercise 3, and the `PeerAuthentication` that turned mTLS off for it) as YAML for a real
# cluster, with the namespace labelled `istio-injection: enabled` so that Istio injects the
# sidecars; then the cell stops the cluster:

# %% tags=["id-real-cluster-export"]
EXPORTED = Path("exported/lab03")
cluster.export(EXPORTED)
cluster.close()
print((EXPORTED / "README.txt").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# In a terminal in this folder (`labs/`), on a cluster with Istio (`../tools/real-cluster.sh
# exported/lab03` installs it, applies the folder and waits for the Deployments):
#
# ```bash
# kubectl apply -f exported/lab03/
# kubectl apply -f https://raw.githubusercontent.com/istio/istio/1.30.3/samples/sleep/sleep.yaml
# kubectl get pod -l app=httpbin -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}'
# #   istio-init  httpbin istio-proxy            <- the injected init container and sidecar
# kubectl exec deploy/sleep -c sleep -- curl -s http://httpbin:8000/headers   # X-Forwarded-Client-Cert
# istioctl proxy-status                                   # every sidecar and its config version
# istioctl proxy-config listeners deploy/sleep            # 15001 outbound, 15006 inbound, ...
# istioctl proxy-config routes deploy/sleep --name 8000
# istioctl proxy-config clusters deploy/sleep --fqdn httpbin.default.svc.cluster.local
# istioctl proxy-config endpoints deploy/sleep --cluster "outbound|8000||httpbin.default.svc.cluster.local"
# kubectl logs deploy/httpbin -c istio-proxy              # the access log
# ```
#
# What differs from the laptop:
#
# - **Interception** is transparent: iptables `REDIRECT` rules installed by `istio-init` (or the
#   Istio CNI plugin) send every outbound TCP connection to Envoy on 15001 and every inbound one
#   to 15006 — even for apps that ignore `HTTP_PROXY`. Here the app must honour `HTTP_PROXY`.
# - **One sidecar per pod.** Istio's client-side state (connection pools, ejections) is per pod;
#   labkit runs one sidecar object per Deployment, with one inbound listener per pod.
# - **xDS is a gRPC stream** from istiod to each Envoy, eventually consistent within about a
#   second; labkit pushes in-process and waits until every sidecar has the new version.
# - **Ambient mode** (generally available since Istio 1.24) removes the sidecars: a per-node `ztunnel` does mTLS and
#   L4, and optional per-namespace waypoint proxies do L7 — a different answer to the same cost.

# %% [markdown] tags=["id-summary-intro"]
# ## Summary
#
# The question: *what does a sidecar proxy do, and why does a service mesh need it?* From
# your numbers:

# %% tags=["nbval-ignore-output", "id-summary"]
print(f"- The injected sidecar saw every request: the app received {len(added)} headers it never sent "
      f"({', '.join(added)}), and both sidecars logged the call.")
print(f"- The control plane pushed {pushes_during} configuration versions while "
      f"{during.requests} requests ran; {during.count(200)} of them got 200.")
print(f"- Each hop cost about {overhead_per_hop_ms:.3f} ms at the median on this machine; two hops with mTLS "
      f"{two_hops.percentile(50) * 1000:.3f} ms against {direct.percentile(50) * 1000:.3f} ms direct.")
print(f"- Scaled up with your numbers: a call tree of depth {deep.depth} and fan-out {deep.fanout} "
      f"({deep.calls} calls) gets {deep.added(50):.1f} ms (p50) and {deep.added(99):.1f} ms (p99) added, and its "
      f"sidecars need {deep.sidecar_cpu_cores:.2f} cores at 100 requests per second.")

# %% [markdown] tags=["id-summary-end"]
# A sidecar is the service mesh's hands: one proxy next to each workload that intercepts all of
# its inbound and outbound traffic, and so can balance, retry, time out, encrypt, authorise and
# measure every call without a line of application code. It is needed because those decisions
# must be taken **on the path** of each request — and the control plane, which never touches a
# request, keeps thousands of such proxies consistent. The price is an extra hop (fractions of
# a millisecond each) and a proxy's CPU and memory in every pod.
