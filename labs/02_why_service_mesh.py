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
# # Lab 02 — Why a service mesh, when Kubernetes already has networking?
#
# **What you will learn** (about 60 minutes)
#
# 1. Say exactly what Kubernetes networking gives microservices: discovery by name and
#    connection-level load balancing — and see where that stops.
# 2. Run the same three services without and with sidecars, and watch the mesh **retry** a
#    flaky backend so that callers never see its errors.
# 3. See **mutual TLS** on the wire: readable HTTP without the mesh, ciphertext with it, and a
#    plaintext client cut off under `STRICT` mode.
# 4. Read what the sidecars **observe** — metrics, access logs, a distributed trace — and draw
#    a service graph from the metrics the way Kiali does.
# 5. Refuse a caller by its **identity** with an `AuthorizationPolicy`.
# 6. Turn each mesh feature on and off in a dashboard over a failing, insecure topology and see
#    what it changes.

# %% [markdown] tags=["id-problem"]
# ## The problem
#
# A microservice application is many small services calling each other over the network.
# Kubernetes gives each set of pods a `Service`: a stable name (`backend`) and a virtual
# address; `kube-proxy` spreads **TCP connections** over the ready pods. That is all it does
# for the traffic between services. Everything else a call needs — retrying a failed request,
# giving up after a timeout, not hammering a sick pod, encrypting the traffic and proving who is
# calling, counting requests and errors per caller — is left to each application, in each
# language, in each team.
#
# A **service mesh** (Istio, Linkerd) moves those concerns out of the applications into a proxy
# next to every pod — the **sidecar** (Envoy, in Istio) — configured centrally by a control
# plane. The application keeps calling `http://backend:9080/`; the sidecars do the rest.

# %% [markdown] tags=["id-idea"]
# ## The idea
#
# ```mermaid
# flowchart LR
#     subgraph K8s["Kubernetes networking only"]
#         c1[client] --> s1{{"Service backend<br/>(kube-proxy: L4,<br/>one pick per connection)"}}
#         s1 --> b1[backend v1]
#         s1 --> b2[backend v2]
#     end
#     subgraph Mesh["with a service mesh"]
#         c2[client] --> p1[sidecar]
#         p1 -- "mTLS, per-request LB,<br/>retries, timeouts, metrics" --> p2[sidecar] --> b3[backend v1]
#         p1 -- "mTLS" --> p3[sidecar] --> b4[backend v2]
#         cp[(control plane<br/>istiod)] -. config + certificates .-> p1 & p2 & p3
#     end
# ```
#
# The demo application is a Bookinfo in miniature (`data/manifests/mesh-demo.yaml`): a
# `frontend` that calls `backend` by name, and `backend` in two versions, `v1` and `v2`.
# Every answer says which service and version produced it. To make the point about
# failures, `v2` is **flaky**: it answers half of its requests with `503` (the app's own
# `FAIL_PERCENT` setting — a real bug, not a mesh feature).

# %% tags=["id-setup"]
import http.client
import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import matplotlib.pyplot as plt

from labkit import load
from labkit.apps.mesh_demo_deploy import demo_manifest
from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane

FLAKY = {"backend-v2": {"FAIL_PERCENT": "50"}}


def call(base_url: str, path: str = "/", *, host: str | None = None, headers: dict | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
    """GET `path`; `host` sets the Host header (the service name a sidecar routes by).
    Reuses `conn` if given (a keep-alive connection)."""
    u = urlsplit(base_url)
    c = conn or http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", path, headers={"Host": host or u.netloc, **(headers or {})})
    r = c.getresponse()
    body = r.read().decode()
    if conn is None:
        c.close()
    try:
        return r.status, json.loads(body)
    except ValueError:
        return r.status, {"text": body}


# %% [markdown] tags=["id-k8s-intro"]
# ## Part 1 — Kubernetes networking only
#
# First the application as plain Kubernetes runs it: no sidecars. Kubernetes lets a pod find a
# Service by its name through cluster DNS, and also through environment variables: when a
# container starts, the kubelet gives it `<NAME>_SERVICE_HOST` and `<NAME>_SERVICE_PORT` (and
# a few Docker-links-style `<NAME>_PORT_...` ones) for **every Service that exists in its
# namespace at that moment**. labkit has no DNS, but its kubelet sets the same variables, with
# the Service's local address. That is why the manifest lists the Services before the
# Deployments: a Service created after a pod is invisible to that pod's variables.

# %% tags=["nbval-ignore-output", "id-k8s-up"]
kube = LocalCluster()
kube.apply(demo_manifest(sidecars=False, env=FLAKY))
backend_url = kube.url("Service", "backend")
print(kube.status())

# %% [markdown] tags=["id-k8s-env-intro"]
# These are the variables a container starting now in namespace `default` gets, computed by the
# same code labkit's kubelet ran for the frontend (on a cluster: `kubectl exec deploy/frontend
# -- env | grep BACKEND`). The mesh-demo app calls `http://backend:9080/` by reading
# `BACKEND_SERVICE_HOST` and `BACKEND_SERVICE_PORT`:

# %% tags=["nbval-ignore-output", "id-k8s-env"]
from labkit.core.service import service_links

for name, value in sorted(service_links(kube, "default").items()):
    if name.startswith("BACKEND_"):
        print(f"{name}={value}")

# %% tags=["nbval-ignore-output", "id-k8s-discovery"]
status, answer = call(kube.url("Service", "frontend"))
print(status, json.dumps(answer, indent=1))

# %% tags=["id-k8s-discovery-check"]
assert answer["service"] == "frontend" and answer["upstreams"][0]["body"]["service"] == "backend"
print("✓ frontend found backend by name and got an answer from one of its versions")

# %% [markdown] tags=["id-k8s-lb-intro"]
# **Load balancing, Kubernetes style.** The Service balances *connections*, not requests. In its
# default iptables mode kube-proxy picks a pod **at random** for each new connection (an iptables
# `statistic --mode random` rule per endpoint; its IPVS mode does round robin instead: see
# https://kubernetes.io/docs/reference/networking/virtual-ips/). labkit's Service picks round robin,
# like IPVS, so the count below comes out exact; with iptables it would scatter around 10/10. Either
# way the choice is made once per connection. Send 20 requests to `backend`, first each on a new
# connection, then all 20 on **one** keep-alive connection — what HTTP clients, connection pools and
# gRPC do.

# %% tags=["nbval-ignore-output", "id-k8s-lb"]
new_connections = Counter(call(backend_url)[1]["version"] for _ in range(20))
keep_alive = http.client.HTTPConnection(urlsplit(backend_url).hostname, urlsplit(backend_url).port)
one_connection = Counter(call(backend_url, conn=keep_alive)[1]["version"] for _ in range(20))
keep_alive.close()
print("a new connection per request:", dict(sorted(new_connections.items())))
print("one keep-alive connection:   ", dict(sorted(one_connection.items())))

# %% tags=["id-k8s-lb-check"]
assert new_connections == Counter({"v1": 10, "v2": 10})
assert len(one_connection) == 1, "one connection stays on one pod"
print("✓ one pick per connection: a keep-alive client sticks to one pod")

# %% [markdown] tags=["id-k8s-flaky-intro"]
# **Failures.** `backend-v2` fails half of its requests. The frontend calls the backend once per
# request (on a new connection, so half of the calls land on v2). Nothing between them retries.
# `labkit.load` is a small load generator shaped like fortio, the one Istio's own tasks use: it
# sends requests at a concurrency and rate and counts the status codes.

# %% tags=["nbval-ignore-output", "id-k8s-flaky"]
plain = load.run(kube.url("Service", "frontend") + "/", requests=200, concurrency=1)
print(plain.summary())

# %% tags=["id-k8s-flaky-check"]
assert 0.1 < plain.count(503) / plain.requests < 0.4
print("✓ about a quarter of the frontend's answers are 503: half the calls reach v2, half of those fail")

# %% [markdown] tags=["id-k8s-wire-intro"]
# **On the wire.** A `WireTap` is a relay that records every byte it passes, as `tcpdump` on the
# node would. Put it in front of the backend and send one request through it.

# %% tags=["nbval-ignore-output", "id-k8s-wire"]
from labkit.mesh.wiretap import WireTap, preview, printable_share

with WireTap((urlsplit(backend_url).hostname, urlsplit(backend_url).port)) as tap:
    call(tap.url, host="backend:9080")
print(preview(bytes(tap.to_server)))
print(preview(bytes(tap.to_client)))
plain_wire = printable_share(bytes(tap.to_server + tap.to_client))

# %% tags=["id-k8s-wire-check"]
assert plain_wire == 1.0 and b'"service": "backend"' in tap.to_client
print("✓ every byte is readable text: request, headers, and the answer")

# %% [markdown] tags=["id-k8s-observe-intro"]
# **Observability.** What does Kubernetes know about this traffic? The Service can tell how many
# connections it passed — nothing about requests, response codes, latency, or who called.

# %% tags=["nbval-ignore-output", "id-k8s-observe"]
print(json.dumps(kube.get("Service", "backend").status.detail["ports"], indent=1))
kube.close()

# %% [markdown] tags=["id-k8s-summary"]
# So far: **discovery** (a name and a stable address) and **connection-level balancing** — real
# and useful, but blind to HTTP. Requests failed and nobody retried them; the traffic was
# readable by anyone on the path; any pod could call any other; and nobody counted anything.

# %% [markdown] tags=["id-mesh-intro"]
# ## Part 2 — the same services with sidecars
#
# Now the same Deployments in a namespace labelled `istio-injection: enabled`. As Istio's
# mutating webhook does, labkit's control plane **injects a sidecar** into every pod: the app's
# outbound calls go through it (`HTTP_PROXY` here, iptables in Istio), and every request to the
# app enters through it. The control plane also gives each workload a certificate with its
# SPIFFE identity. Nothing in the application changed.
#
# `control_plane(mesh).client()` is Istio's `sleep` sample: a caller with its own sidecar. We send requests to
# its outbound listener with the service name as `Host`, as an app inside the mesh would.

# %% tags=["nbval-ignore-output", "id-mesh-up"]
mesh = LocalCluster()
mesh.apply(demo_manifest(sidecars=True, env=FLAKY))
plane = control_plane(mesh)  # the mesh's control plane, as istiod: sidecars, certificates
sleep = plane.client()  # namespace default, service account "sleep"
print(mesh.status())
print(sleep)

# %% tags=["nbval-ignore-output", "id-mesh-lb"]
proxy = urlsplit(sleep.outbound_url)
keep_alive = http.client.HTTPConnection(proxy.hostname, proxy.port)
through_sidecar = Counter(call(sleep.outbound_url, host="backend:9080", conn=keep_alive)[1]["version"]
                          for _ in range(20))
keep_alive.close()
print("one keep-alive connection to the sidecar:", dict(sorted(through_sidecar.items())))

# %% tags=["id-mesh-lb-check"]
assert set(through_sidecar) == {"v1", "v2"}
print("✓ the sidecar balances each request, even on one connection")

# %% [markdown] tags=["id-mesh-retry-intro"]
# ### Retries hide a flaky backend
#
# Istio's **default** retry policy retries connection failures, not a `503` the app sent
# (since Istio 1.24), so at first the errors still reach the caller:

# %% tags=["nbval-ignore-output", "id-mesh-retry-before"]
before = load.run("http://frontend:9080/", requests=200, concurrency=1, proxy=sleep.outbound_url)
print(before.summary())

# %% [markdown] tags=["id-mesh-retry-vs"]
# Now one `VirtualService` tells every caller's sidecar to retry `backend` on 5xx, up to 3 times.
# The control plane pushes it to the running sidecars — nothing restarts:

# %% tags=["nbval-ignore-output", "id-mesh-retry-apply"]
RETRIES = '''
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
        attempts: 3
        retryOn: 5xx
'''
mesh.apply(RETRIES)
after = load.run("http://frontend:9080/", requests=200, concurrency=1, proxy=sleep.outbound_url)
print(after.summary())

# %% tags=["id-mesh-retry-check"]
assert before.count(503) / before.requests > 0.1
assert after.success_rate >= 0.98
v2_sidecar = plane.sidecar("backend-v2")
v2_failures = v2_sidecar.telemetry.metrics.total(reporter="destination", response_code="503")
assert v2_failures > 0
print("✓ with retries the callers see (almost) no 503 — yet backend-v2's own sidecar still counts its 503s")

# %% [markdown] tags=["id-mesh-retry-discuss"]
# The retries **hide** the failures from the caller; they do not fix v2. The next request that
# fails on v2 is retried on another host (Envoy avoids the host it just tried), so it succeeds
# on v1 — at the cost of extra latency and extra load on the backend. v2's sidecar still
# counts every 503 it served, which is how an operator finds the bug.

# %% [markdown] tags=["id-mesh-wire-intro"]
# ### Mutual TLS: ciphertext on the wire
#
# Sidecars talk to each other over **mutual TLS**: both sides present a certificate issued by
# the mesh CA, whose only name is the workload's SPIFFE identity
# `spiffe://cluster.local/ns/<namespace>/sa/<service account>`. Each Deployment of the demo
# names its own ServiceAccount (`serviceAccountName: backend` in both backend versions,
# `frontend` in the frontend; without one a pod runs as the namespace's `default`). Here is the
# certificate the control plane gave backend-v1's sidecar:

# %% tags=["nbval-ignore-output", "id-mesh-cert"]
print(plane.sidecar("backend-v1").tls.describe())

# %% [markdown] tags=["id-mesh-wire-intro-2"]
# Now tap the wire in front of backend-v1's **sidecar** (its inbound listener) and make the
# same request a sidecar makes: TLS with a certificate from the mesh CA (we borrow the identity
# of `sleep`), checking that the server proves backend-v1's identity.

# %% tags=["nbval-ignore-output", "id-mesh-wire"]
from labkit.mesh.security import check_peer

inbound = urlsplit(plane.sidecar("backend-v1").inbound_url)
sleep_cert = plane.ca.issue("default", "sleep")
with WireTap((inbound.hostname, inbound.port)) as tap:
    tls = http.client.HTTPSConnection(inbound.hostname, tap.port, context=sleep_cert.client_context(), timeout=10)
    tls.request("GET", "/", headers={"Host": "backend:9080"})
    reply = tls.getresponse()
    decrypted = json.loads(reply.read())
    server_identity = check_peer(tls.sock, plane.sidecar("backend-v1").tls.identity)
    tls_version = tls.sock.version()
    tls.close()
print(f"{reply.status} from {server_identity} over {tls_version}: {decrypted}")
print(preview(bytes(tap.to_server)))
mtls_wire = printable_share(bytes(tap.to_server + tap.to_client))
print(f"printable bytes: {mtls_wire:.0%} (plaintext HTTP was {plain_wire:.0%})")

# %% [markdown] tags=["id-mesh-wire-discuss"]
# The only readable words are in the TLS ClientHello: the ALPN protocols a sidecar offers
# (`istio-peer-exchange`, `istio-http/1.1`, ...), which tell the server that a sidecar is
# calling. Everything after the handshake — the request line, the headers, the JSON answer,
# and in TLS 1.3 even the certificates — is encrypted.

# %% tags=["id-mesh-wire-check"]
assert reply.status == 200 and decrypted["version"] == "v1"
assert b'"service"' not in tap.to_client and b"GET /" not in tap.to_server
assert mtls_wire < 0.6
print("✓ the same request and answer, but the wire carries only a TLS handshake and ciphertext")

# %% [markdown] tags=["id-mesh-strict-intro"]
# The mesh starts in `PERMISSIVE` mode: a sidecar accepts mTLS **and** plaintext, so workloads
# without sidecars keep working during a migration. A `PeerAuthentication` in `STRICT` mode
# makes the sidecars refuse plaintext. A plaintext client then gets no HTTP answer at all —
# its connection is closed (curl reports exit code 56) — while mesh traffic goes on, encrypted.

# %% tags=["nbval-ignore-output", "id-mesh-strict"]
mesh.apply('''
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: STRICT
''')
try:
    call(plane.sidecar("backend-v1").inbound_url, host="backend:9080")
    plaintext_outcome = "answered"
except (ConnectionError, http.client.HTTPException) as exc:
    plaintext_outcome = f"connection closed ({type(exc).__name__})"
strict_mesh = load.run("http://frontend:9080/", requests=20, concurrency=1, proxy=sleep.outbound_url)
print("plaintext client:", plaintext_outcome)
print("mesh traffic:", strict_mesh.status_counts)

# %% tags=["id-mesh-strict-check"]
assert plaintext_outcome.startswith("connection closed") and strict_mesh.success_rate == 1.0
print("✓ STRICT: plaintext is refused at the connection, sidecar-to-sidecar traffic goes on")

# %% [markdown] tags=["id-mesh-observe-intro"]
# ### Observability: metrics, logs and traces for free
#
# Every sidecar exports Istio's standard metrics in Prometheus format at its metrics endpoint.
# `istio_requests_total` counts requests by `reporter` (`source` = the caller's sidecar,
# `destination` = the callee's), workloads, response code, response flags, and
# `connection_security_policy`. Here are backend-v2's, as its own sidecar reports them:

# %% tags=["nbval-ignore-output", "id-mesh-metrics"]
import urllib.request

from labkit.widgets.service_graph import parse_requests_total

page = urllib.request.urlopen(v2_sidecar.metrics_url).read().decode()
print(next(line for line in page.splitlines() if line.startswith("istio_requests_total")), "\n")
print(f"{'reporter':<12} {'source_workload':<16} {'code':>4}  {'connection_security_policy':<27} requests")
for key, value in sorted(parse_requests_total(page).items()):
    labels = dict(key)
    print(f"{labels['reporter']:<12} {labels['source_workload']:<16} {labels['response_code']:>4}  "
          f"{labels['connection_security_policy']:<27} {value:g}")

# %% [markdown] tags=["id-mesh-log-intro"]
# Each sidecar also writes an **access log** line per request in Envoy's format: time, method,
# path, status, response flags, bytes, duration, the upstream host and cluster. The frontend's
# sidecar, last three requests (outbound ones to `backend`, inbound ones from `sleep`):

# %% tags=["nbval-ignore-output", "id-mesh-log"]
for line in plane.sidecar("frontend").access_log(3):
    print(line)

# %% [markdown] tags=["id-mesh-trace-intro"]
# And **traces**. Each sidecar records a span per request; the app forwards the trace headers
# (`traceparent`, `x-request-id`) from the request it serves to the calls it makes, so the
# spans link up. Send one request with a known trace id and draw its spans:

# %% tags=["id-mesh-trace"]
from labkit.mesh.telemetry import merge_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
for attempt in range(50):  # until a request hits flaky v2, so the trace shows a retry
    trace_id = f"{TRACE_ID[:-4]}{attempt:04d}"
    call(sleep.outbound_url, host="frontend:9080", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    spans = merge_spans([s.telemetry for s in plane.sidecars()], trace_id)
    if any(s["status"] == 503 for s in spans):
        break
t0 = min(s["start"] for s in spans)
fig, ax = plt.subplots(figsize=(9, 2.8), layout="constrained")
for i, s in enumerate(spans):
    color = "tab:red" if s["status"] >= 500 else ("tab:blue" if s["reporter"] == "source" else "tab:green")
    ax.barh(i, s["duration_ms"], left=(s["start"] - t0) * 1000, color=color)
    ax.text((s["start"] - t0) * 1000, i, f" {s['workload']} ({s['reporter']}) {s['name']} -> {s['status']}",
            va="center", fontsize=8)
ax.invert_yaxis()
ax.set_xlim(0, max((s["start"] - t0) * 1000 + s["duration_ms"] for s in spans) * 1.4)
ax.set(xlabel="milliseconds since the first span", yticks=[], title=f"trace {trace_id}")
plt.show()

# %% tags=["id-mesh-trace-check"]
workloads = [s["workload"] for s in spans]
assert workloads[:3] == ["sleep", "frontend", "frontend"]
assert [s["status"] for s in spans if s["workload"] == "backend-v2"] == [503]
assert spans[-1]["workload"] == "backend-v1" and spans[-1]["status"] == 200
print("✓ one trace: sleep -> frontend -> backend-v2 (503) -> retried on backend-v1 (200)")

# %% [markdown] tags=["id-mesh-trace-discuss"]
# Blue spans are callers' sidecars (`reporter=source`), green the callees' (`destination`),
# red a failure. The frontend's sidecar tried backend-v2, got its 503, waited a short
# **back-off** (Envoy's retries wait a random time up to 25 ms, then longer), and sent the
# request to backend-v1. The trace shows the retry that the caller never saw.

# %% [markdown] tags=["id-mesh-authz-intro"]
# ### Authorisation by identity
#
# A caller's identity is its certificate's SPIFFE id, so a policy can name **who** may call,
# not which IP address. Every workload here runs as its own service account:

# %% tags=["id-mesh-identities"]
for name in ("frontend", "backend-v1", "backend-v2"):
    print(f"{name:>10} runs as {plane.sidecar(name).tls.identity}")
print(f"{'sleep':>10} runs as {sleep.tls.identity}")

# %% [markdown] tags=["id-mesh-authz-intro-2"]
# `sleep` is meant to go through the frontend. Deny its identity direct access to the backend,
# then send the same request both ways:

# %% tags=["id-mesh-authz"]
mesh.apply('''
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-sleep
spec:
  selector:
    matchLabels: {app: backend}
  action: DENY
  rules:
    - from:
        - source:
            principals: ["cluster.local/ns/default/sa/sleep"]
''')
direct_status, direct = call(sleep.outbound_url, host="backend:9080")
via_status, via = call(sleep.outbound_url, host="frontend:9080")
print(f"sleep -> backend:            {direct_status} {direct.get('text', direct.get('service'))}")
print(f"sleep -> frontend -> backend: {via_status}, backend answered frontend with {via['upstreams'][0]['status']}")

# %% tags=["id-mesh-authz-check"]
assert direct_status == 403 and via_status == 200 and via["upstreams"][0]["status"] == 200
print("✓ backend's sidecar refused sleep's identity, and let the frontend's through")

# %% [markdown] tags=["id-mesh-authz-discuss"]
# The `403 RBAC: access denied` comes from the backend's **sidecar**: the request never reached
# the backend app. Through the frontend, the backend's sidecar saw the frontend's certificate
# (`sa/frontend`) and let the call in. The decision used identities proven during the mTLS
# handshake, not addresses — and it could only tell the two callers apart because the
# workloads run as different service accounts: with every pod on `sa/default`, a policy
# naming `default` would admit or refuse all of them alike.

# %% [markdown] tags=["id-mesh-graph-intro"]
# ### A service graph from the metrics
#
# Kiali draws the mesh from nothing but these metrics. `labkit.widgets.service_graph` does the
# same: scrape every sidecar's metrics endpoint before and after some traffic, turn the
# differences into rates per caller → callee, and draw nodes per workload and version, edges
# with request rate, error rate and mTLS.

# %% tags=["nbval-ignore-output", "id-mesh-graph"]
from labkit.widgets.service_graph import draw_service_graph, service_graph, snapshot


def scrape() -> dict:
    return snapshot(urllib.request.urlopen(s.metrics_url).read().decode() for s in plane.sidecars())


mesh.delete("networking.istio.io/v1/VirtualService", "backend")  # no retries: let the graph show v2's errors
first, started = scrape(), time.monotonic()
traffic = load.run("http://frontend:9080/", duration=2.0, qps=50, concurrency=2, proxy=sleep.outbound_url)
graph = service_graph(first, scrape(), time.monotonic() - started)
print(graph.table())
fig, ax = plt.subplots(figsize=(9, 4))
draw_service_graph(graph, ax, title="mesh-demo: 2 s at 50 req/s")
plt.show()

# %% tags=["id-mesh-graph-check"]
assert {(e.source, e.destination) for e in graph.edges} >= {
    ("sleep", "frontend (v1)"), ("frontend (v1)", "backend-v1 (v1)"), ("frontend (v1)", "backend-v2 (v2)")}
assert all(e.mtls for e in graph.edges)
assert graph.edge("frontend (v1)", "backend-v2 (v2)").error_rate > 0.2
assert graph.edge("frontend (v1)", "backend-v1 (v1)").error_rate == 0
EXPORTED = Path("exported/lab02")  # for "On a real cluster" below
mesh.export(EXPORTED)
mesh.close()
print("✓ every edge is mutual TLS; the red one is frontend -> backend-v2")

# %% [markdown] tags=["id-dashboard-intro"]
# ## Explore: which feature fixes what?
#
# The same topology in a dashboard: `frontend` and `sleep` call `backend` (three pods, one of them
# flaky), and a `legacy-job` outside the mesh calls it too. Turn the features on one at a time and watch
# each caller's outcome: start with **sidecars injected** (nothing changes but the wire: mTLS between
# sidecars is automatic, PERMISSIVE lets the legacy job in plaintext), then retries, STRICT, the DENY
# policy, outlier detection, pool limits at a high request rate. Then try the DENY policy with
# PeerAuthentication `DISABLE`: a policy on a caller's identity cannot match a plaintext request, which
# has none. (STRICT refuses the legacy job, but its request's bytes have already crossed the wire in
# plaintext when the server sidecar resets the connection: the dashboard still counts them as readable.)
#
# Each outcome comes from labkit's policy code: the client sidecar's retry, balancing, pool and
# outlier code in the mesh simulator (`labkit.sim.simulate_mesh`, the sidecars' traffic simulated as
# one client), the server sidecar's `admits` (mTLS mode) and `authorize` (AuthorizationPolicy).
# Latency adds the `sidecar hop` time per sidecar crossed — put in what lab 03 measures.

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.mesh_features import features_dashboard

features = features_dashboard()
features

# %% tags=["nbval-ignore-output", "id-dashboard-check"]
r = features.result
assert r.plaintext_share == 1.0 and r.outcome("frontend").failed > 0.1
features.set(sidecars=True, attempts=3, mtls="STRICT", authz=True)  # what the controls run
r = features.result
assert r.outcome("frontend").ok > 0.99 and r.outcome("sleep").denied == 1.0
assert r.outcome("legacy-job").refused == 1.0
assert abs(r.plaintext_share - 0.1) < 1e-9, "the refused job's request still crossed the wire in plaintext"
features.set(mtls="DISABLE")
assert features.result.outcome("sleep").denied == 0, "no certificate, no principal to deny"
features.set(sidecars=False, attempts=0, mtls="PERMISSIVE", authz=False)
print("✓ retries hid the flaky pod, STRICT cut the plaintext client, the DENY worked only with mTLS")

# %% [markdown] tags=["id-exercise-1"]
# ## Exercises
#
# ### Exercise 1 — Kubernetes or mesh? (2 points)
#
# For each capability, say whether plain Kubernetes gives it (`"kubernetes"`) or it takes a
# service mesh (`"mesh"`). Base it on what you saw above.

# %% tags=["id-exercise-1-solution"]
from labkit.grading.lab02 import FEATURES, check_features

for feature in FEATURES:
    print("-", feature)
### BEGIN SOLUTION
features = {
    "find a service by name": "kubernetes",
    "spread connections over a Service's pods": "kubernetes",
    "spread each request over pods, even on one keep-alive connection": "mesh",
    "retry a request that got a 503": "mesh",
    "encrypt and authenticate pod-to-pod traffic": "mesh",
    "count requests per caller, callee and response code": "mesh",
    "refuse a caller by its workload identity": "mesh",
    "restart a crashed container": "kubernetes",
}
### END SOLUTION

# %% tags=["check", "points-2", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab02 import check_features

check_features(answer("features"))

# %% [markdown] tags=["id-exercise-2"]
# ### Exercise 2 — allow only `sleep`, only GET (3 points)
#
# Write the `spec` of an `AuthorizationPolicy` (as a Python dict, the same shape as the YAML
# under `spec:`) for namespace `default` that lets **only** the `sleep` service account of
# namespace `default` call the **frontend**, and only with `GET` (any path). Everything else —
# other identities, other methods, plaintext callers — must be denied. The check evaluates your
# policy with the same code the sidecars run, on a few requests.

# %% tags=["id-exercise-2-solution"]
from labkit.grading.lab02 import check_allow_sleep_get

### BEGIN SOLUTION
policy = {
    "selector": {"matchLabels": {"app": "frontend"}},
    "action": "ALLOW",
    "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
        "to": [{"operation": {"methods": ["GET"]}}],
    }],
}
### END SOLUTION

# %% tags=["check", "points-3", "id-exercise-2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab02 import check_allow_sleep_get

check_allow_sleep_get(answer("policy"))

# %% [markdown] tags=["id-exercise-3"]
# ### Exercise 3 — how many retries? (2 points)
#
# Each try of a request fails independently with probability `RETRY_FAILURE` (0.3). What is the
# smallest `retries.attempts` that makes at least `RETRY_TARGET` (99.9 %) of requests succeed?
# Remember what `attempts` counts in Istio.

# %% tags=["id-exercise-3-solution"]
from labkit.grading.lab02 import RETRY_FAILURE, RETRY_TARGET, check_attempts

### BEGIN SOLUTION
attempts = 0
while 1 - RETRY_FAILURE ** (attempts + 1) < RETRY_TARGET:
    attempts += 1
### END SOLUTION
print(f"attempts: {attempts} -> {1 - RETRY_FAILURE ** (attempts + 1):.4%} succeed")

# %% tags=["check", "points-2", "id-exercise-3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab02 import check_attempts

check_attempts(answer("attempts"))

# %% [markdown] tags=["id-exercise-3-discuss"]
# Real failures are rarely independent: a pod that is down fails every try sent to it. That is
# why Envoy sends a retry to *another* host, and why retries need a budget (`maxRetries`, or a
# route `timeout` covering all tries) — lab 04 shows what too many retries do to a struggling
# service.

# %% [markdown] tags=["id-real-cluster"]
# ## On a real cluster
#
# Before the mesh part closed, `mesh.export("exported/lab02")` wrote what it ran for a real
# cluster with Istio: the three services with their sidecars asked for, the STRICT
# `PeerAuthentication` and the `AuthorizationPolicy` (the retrying `VirtualService` had been
# deleted for the graph). The namespace gets `istio-injection: enabled`, which is how Istio
# adds the sidecars; mesh-demo is labkit's own program, so the export writes a `Dockerfile` and
# `README.txt` says how to build it:

# %% tags=["id-real-cluster-export"]
print((EXPORTED / "README.txt").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# Step 1's `docker build` runs in the labkit checkout (the folder above this one: the image is
# built from labkit's source), so there its file is `labs/exported/lab02/Dockerfile`. Then, in a
# terminal in this folder (`labs/`):
#
# ```bash
# ../tools/real-cluster.sh exported/lab02   # installs Istio, Knative, KServe, Flagger (once), applies, checks
# # or, on a cluster with Istio:
# kubectl apply -f exported/lab02/
# # the client: Istio's sleep sample (service account sleep, the one deny-sleep names)
# kubectl apply -f https://raw.githubusercontent.com/istio/istio/1.30.3/samples/sleep/sleep.yaml
# kubectl exec deploy/sleep -- curl -s http://frontend:9080/       # frontend -> backend v1 / v2
# kubectl exec deploy/sleep -- curl -s http://backend:9080/        # 403 RBAC: access denied (deny-sleep)
# istioctl proxy-config cluster deploy/frontend                    # what the sidecar runs
# istioctl dashboard kiali                                         # the service graph
# ```
#
# What differs from the laptop:
#
# - **Interception** is done by iptables rules in each pod's network namespace (set up by an
#   init container or the Istio CNI plugin); labkit uses `HTTP_PROXY` and an inbound listener
#   in front of each app instead.
# - **Discovery** is usually cluster DNS (`backend.default.svc.cluster.local`), which has no
#   ordering requirement; labkit has none, so Part 1 used the kubelet's Service variables,
#   which a real kubelet sets too (turn them off with `enableServiceLinks: false`).
# - **Certificates** are issued by istiod and delivered to each sidecar over SDS, rotated well
#   before they expire (24 h by default); here the control plane issues them in-process.
# - **Metrics** are scraped by Prometheus and drawn by Kiali; traces go to Jaeger or Zipkin
#   once a tracing provider is configured (Istio ≥ 1.22 configures none by default).

# %% [markdown] tags=["id-summary-intro"]
# ## Summary
#
# The question: *what does a service mesh such as Istio add to microservices, beyond what
# Kubernetes networking provides?* From your numbers:

# %% tags=["nbval-ignore-output", "id-summary"]
print(f"- Kubernetes gave discovery by name and one pod per connection: 20 new connections split "
      f"{dict(sorted(new_connections.items()))}, one keep-alive connection stayed on one version.")
print(f"- With a flaky v2, {plain.count(503) / plain.requests:.0%} of frontend answers were 503 without the mesh; "
      f"with one VirtualService (retries: 3 on 5xx) {after.success_rate:.1%} succeeded, while v2's sidecar "
      f"still counted {v2_failures} failures.")
print(f"- On the wire: {plain_wire:.0%} printable bytes without the mesh, {mtls_wire:.0%} with mutual TLS "
      f"({tls_version}); STRICT mode cut off a plaintext client: {plaintext_outcome}.")
print("- Every sidecar reported metrics, access logs and spans; the graph above came from metrics alone.")
print(f"- An AuthorizationPolicy refused sleep's identity at the backend ({direct_status} in its sidecar) "
      f"while the frontend's identity got through ({via['upstreams'][0]['status']}).")

# %% [markdown] tags=["id-summary-end"]
# Kubernetes networking answers *where* a service is. A service mesh adds *how* each request
# travels — balanced per request, retried, timed out, encrypted and authenticated, authorised,
# and measured — in one place for every service and language, configured with a few YAML
# objects. The price is a proxy next to every pod (lab 03 measures it) and one more system to
# understand and operate.
