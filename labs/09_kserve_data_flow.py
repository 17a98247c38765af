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
# # Lab 09 — KServe's data flow: where a prediction's time goes
#
# **What you will learn** (about 60 minutes)
#
# 1. Follow one request through the layers of a production KServe deployment — mesh sidecars,
#    Knative's activator and queue-proxy, the model server — and say what each is responsible for.
# 2. Measure, live, how long each hop takes, from the proxies' access logs and traces and the model
#    server's `Server-Timing` header.
# 3. Make the three classic bottlenecks visible: the proxy layer (mTLS on and off), the cold start from
#    zero (against `minReplicas: 1`), and model loading for a small and a larger model.
# 4. Use a simulator of the same path to find the dominant hop and to choose `minReplicas` for a
#    latency SLO.

# %% [markdown] tags=["id-idea"]
# ## The idea: one request, many hands
#
# ```mermaid
# flowchart LR
#     C[client app] --> CS["client sidecar<br/>(Envoy: route, retries, mTLS)"]
#     CS -->|mTLS| G["ingress / server sidecar<br/>(authn, authz, telemetry)"]
#     G --> A{"revision<br/>scaled to zero?"}
#     A -->|yes| ACT["Knative activator<br/>holds the request, pokes the autoscaler"]
#     ACT -->|pod ready| QP
#     A -->|no| QP["queue-proxy<br/>(concurrency limit, metrics)"]
#     QP --> M["model server<br/>decode → predict → encode"]
# ```
#
# With a **transformer** (optional pre/post-processing) the path doubles: KServe deploys it as a
# component of its own, `<name>-transformer`, with its own Knative Service, revisions, pods, queue-proxy
# and sidecar. The InferenceService's URL then points at the transformer, which calls the predictor
# (`<name>-predictor`) over the network, through the predictor's whole path above (KServe's
# InferenceService reconciler makes one Knative Service per component; labkit's `labkit.inference.isvc`
# does the same).
#
# * **Istio** (the sidecars and gateway) routes by Host name, encrypts with mutual TLS, retries, and
#   records every request.
# * **Knative Serving** scales the predictor's pods with traffic, to zero when idle; while no pod is
#   ready its **activator** holds requests, and each pod's **queue-proxy** enforces its concurrency and
#   reports load to the autoscaler.
# * **KServe** defines the InferenceService, turns it into all of the above and runs the **model server**,
#   which decodes the request, runs the model and encodes the answer.
# * **Kubernetes** runs the containers underneath.
#
# Each layer adds a little time to every request — and some add a lot to a few requests.

# %% [markdown] tags=["id-path-intro"]
# ## Run it for real: the full path, hop by hop
#
# We apply the iris InferenceService from lab 08 and call it **through the mesh**, as a pod in the
# cluster would: to our client sidecar's outbound listener, with the Host name KServe gives the service
# (`sklearn-iris.default.example.com`: labkit's domain is `example.com`, the one KServe's quick-install
# script configures in Knative's `config-domain`; Knative's own default since v1.11 is
# `svc.cluster.local`). The sidecar finds the service, opens a mutual-TLS connection to
# the service's sidecar, which hands the request to Knative's route, activator and queue-proxy, then to
# the model server.
#
# Three sources time each request, all joined by the `x-request-id` the client sidecar assigns:
#
# * our own clock around the call (end to end);
# * each sidecar's access log: how long it held the request, and how long its upstream took;
# * the `Server-Timing` header, to which every hop on the way back appends its own entries: the model
#   server's `decode`, `predict`, `encode`, then the queue-proxy's `queue-proxy` and the activator's
#   `activator-wait` (held waiting for a pod) and `activator` — each the time spent *in* that hop,
#   the call to the next one excluded.
#
# The difference of nested times is the time of one hop. What no hop reports — handing the request
# over HTTP from the route to the activator to the queue-proxy to the model server and back — is what
# is left of the server sidecar's upstream time once the headers' entries are taken off it. The same requests are also sent straight to
# the InferenceService's local URL (no mesh) for comparison, alternating, so both see the same machine.

# %% tags=["id-path-setup"]
import os
import statistics
import time
from pathlib import Path

import httpx
import matplotlib.pyplot as plt
import numpy as np

import labkit
from labkit.cluster import LocalCluster
from labkit.inference.hops import LIVE_HOPS, measure_path, medians, model_server_pids
from labkit.inference.timing import parse_server_timing
from labkit.mesh.control import control_plane
from labkit.mesh.telemetry import merge_spans
from labkit.net import process_alive

REPO = Path(labkit.__file__).resolve().parents[1]
os.chdir(REPO)  # storageUri paths are relative to the repository
IRIS_YAML = Path("data/manifests/kserve-iris.yaml").read_text()
HOST = "sklearn-iris.default.example.com"
BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}]}
MTLS_OFF = '''
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
'''
help(measure_path)  # labkit.inference.hops: how each hop's time is derived

# %% tags=["nbval-ignore-output", "id-path"]
with LocalCluster() as cluster:
    cluster.apply(IRIS_YAML)
    with_mtls = measure_path(cluster, "sklearn-iris", HOST, BODY)
    plane = control_plane(cluster)
    server = plane.sidecar("sklearn-iris").telemetry.metrics
    mtls_requests = server.total(reporter="destination", connection_security_policy="mutual_tls")
    last_id = plane.client().telemetry.access_records()[-1].request_id
    trace = merge_spans([plane.client().telemetry, plane.sidecar("sklearn-iris").telemetry])
    cluster.apply(MTLS_OFF)
    without_mtls = measure_path(cluster, "sklearn-iris", HOST, BODY)
    plain_requests = server.total(reporter="destination", connection_security_policy="none")
    pids = model_server_pids(cluster)

on, off = medians(with_mtls), medians(without_mtls)
print(f"{'median ms per hop':<30} {'mTLS':>8} {'plaintext':>10}")
for hop in (*LIVE_HOPS, "end to end", "no mesh"):
    print(f"{hop:<30} {on[hop]:8.3f} {off[hop]:10.3f}")
trace_id = trace[-1]["trace_id"]
print("\none request's trace (spans from both sidecars):")
for span in [s for s in trace if s["trace_id"] == trace_id]:
    print(f"  {span['workload']:<14} {span['reporter']:<12} {span['name']:<60} {span['duration_ms']:.3f} ms")

# %% tags=["id-path-check"]
assert len(with_mtls) == len(without_mtls) == 300
assert mtls_requests >= 300 and plain_requests >= 300, "the server sidecar saw both kinds of connection"
# Request by request (each pair sent back to back): on a busy machine the two medians can come out
# equal, the difference within a pair does not.
assert all(statistics.median(r["end to end"] - r["no mesh"] for r in rows) > 0
           for rows in (with_mtls, without_mtls)), "two proxies cost time"
assert on["predict"] > on["decode"] and on["predict"] > on["encode"]
assert on["queue-proxy"] > 0 and off["queue-proxy"] > 0, "each request's queue-proxy timed itself"
assert pids and not any(process_alive(pid) for pid in pids), "the cluster should have stopped the model server"
print("✓ 300 requests each with and without mTLS; the mesh adds time; predict is the model server's biggest part")


# %% tags=["id-path-plot"]
def stacked(ax, bars: dict[str, dict[str, float]], hops) -> None:
    left = np.zeros(len(bars))
    for hop in hops:
        widths = np.array([parts.get(hop, 0.0) for parts in bars.values()])
        ax.barh(list(bars), widths, left=left, label=hop)
        left += widths
    ax.invert_yaxis()
    ax.set_xlabel("median milliseconds")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)


figure, ax = plt.subplots(figsize=(9, 2.6))
stacked(ax, {"mesh, mTLS": on, "mesh, plaintext": off}, LIVE_HOPS)
ax.set_title("one iris prediction, hop by hop (live)")
plt.tight_layout()
plt.show()

# %% [markdown] tags=["id-path-discuss"]
# What the numbers say (yours differ in detail; the shape does not):
#
# * For a small model the **model's own work is a fraction of a millisecond**; the HTTP layers around it
#   (client library, two sidecars, the hand-offs between Knative's route, activator and queue-proxy)
#   cost as much or more.
# * **Knative's hops** report their own time in `Server-Timing`: the activator and the queue-proxy
#   themselves take a few microseconds (a slot to take, counters to update). Their cost is not their
#   logic but the HTTP hand-offs between them: each hop parses and re-sends the request.
# * **The proxy layer** — both sidecars — adds a few tenths of a millisecond per request. mTLS makes the
#   hop between them a little slower: encrypting and decrypting each request (the handshake is paid once
#   per connection, and connections are kept alive). On a real cluster each hop also crosses a network
#   and the kernel's iptables redirection: Istio's own load test (1,000 services, 70,000 requests/s)
#   reported on the performance pages of Istio 1.8 to 1.16 that the proxies add about 2.65 ms to the
#   90th-percentile latency (https://istio.io/v1.16/docs/ops/deployment/performance-and-scalability/);
#   since 1.17 the page shows its latency results as charts only.
# * The Knative part is here on every request: with the default `target-burst-capacity` (printed below
#   from labkit's autoscaler config, which follows Knative's `config-autoscaler` since knative-v1.4.0) a
#   revision with few pods keeps the activator in the path, to absorb bursts.
#
# None of this is a problem for a model that takes 50 ms. It is the whole budget for a model that takes
# 0.2 ms. Now to the bottlenecks that are not per-request costs but per-*start* costs.

# %% tags=["id-burst-default"]
from labkit.serving.autoscaler_config import AutoscalerConfig

TBC = AutoscalerConfig().target_burst_capacity
print(f"target-burst-capacity default: {TBC:g}")

# %% [markdown] tags=["id-cold-intro"]
# ## Bottleneck 2 and 3: cold start from zero, and model load
#
# `data/manifests/kserve-digits.yaml` serves a 100-tree random forest on handwritten digits with
# `minReplicas: 0`. We add `autoscaling.knative.dev/initial-scale: "0"` so it starts at zero, exactly as
# it would be after an idle period. The first request then waits while Knative starts a pod: the model
# server process starts, imports its libraries, loads the model, and only then turns ready. Further
# requests find the pod warm — which is what **every** request gets with `minReplicas: 1`.
#
# The iris service (`minReplicas: 1`) runs beside it, so we can compare the two models' start-up and
# prediction times.

# %% tags=["nbval-ignore-output", "id-cold"]
from labkit.inference.isvc import inference_service
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving

DIGITS_YAML = Path("data/manifests/kserve-digits.yaml").read_text().replace(
    "  name: digits\n", "  name: digits\n  annotations:\n    autoscaling.knative.dev/initial-scale: \"0\"\n")
DIGIT = {"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": [[0.0] * 64]}]}


def timed(client: httpx.Client, host: str, model: str, body: dict) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    answer = client.post(f"/v2/models/{model}/infer", json=body, headers={"Host": host})
    assert answer.status_code == 200, answer.text
    return (time.perf_counter() - started) * 1000, parse_server_timing(answer.headers["server-timing"])


with LocalCluster() as cluster:
    configure_serving(cluster, autoscaler=AutoscalerConfig(allow_zero_initial_scale=True))
    cluster.apply(IRIS_YAML)
    cluster.apply(DIGITS_YAML)
    digits = inference_service(cluster, "digits")
    pods_before = digits.predictor.revision().replica_count
    with httpx.Client(base_url=control_plane(cluster).client().outbound_url, timeout=60) as mesh:
        cold_ms, cold_timing = timed(mesh, "digits.default.example.com", "digits", DIGIT)
        warm = [timed(mesh, "digits.default.example.com", "digits", DIGIT) for _ in range(50)]
        iris_warm = [timed(mesh, HOST, "sklearn-iris", BODY) for _ in range(50)]
    [cold_start] = digits.cold_starts()
    startup = {"digits": digits.startup_breakdown()[0],
               "iris": inference_service(cluster, "sklearn-iris").startup_breakdown()[0]}
    pids = model_server_pids(cluster)

warm_ms = statistics.median(ms for ms, _ in warm)
predict_ms = {"digits": statistics.median(t["predict"] for _, t in warm),
              "iris": statistics.median(t["predict"] for _, t in iris_warm)}
print(f"digits pods before the first request: {pods_before}")
print(f"cold request (from zero): {cold_ms:7.1f} ms   (pod start measured by Knative: {cold_start.seconds:.2f} s)")
print(f"  of which held by the activator waiting for the pod (its Server-Timing activator-wait): "
      f"{cold_timing['activator-wait']:7.1f} ms")
print(f"warm request, median:     {warm_ms:7.2f} ms   <- every request with minReplicas: 1")
for name, s in startup.items():
    print(f"{name:<7} process start {s['process_start_seconds']:.2f} s, model load {s['model_load_seconds']:.2f} s, "
          f"predict {predict_ms[name]:.2f} ms")

# %% tags=["id-cold-check"]
assert pods_before == 0 and cold_start.from_zero
assert cold_ms > 20 * warm_ms, "a request from zero waits for a whole pod start"
assert cold_ms / 1000 > startup["digits"]["model_load_seconds"] > 0
assert cold_timing["activator-wait"] > cold_ms / 2, "the activator held the cold request for most of its time"
assert predict_ms["digits"] > 3 * predict_ms["iris"], "100 trees cost more than one dot product"
assert len(pids) == 2 and not any(process_alive(pid) for pid in pids), "no model server should be left"
print("✓ from zero: the first request waited for process start + model load; warm requests did not")

# %% [markdown] tags=["id-load-intro"]
# Where does "model load" go? Two things happen in it: **importing the framework** (scikit-learn, with
# numpy and scipy) and **deserialising the model file**. Here is each, in this notebook's process: first
# the import, then `joblib.load` of each file alone (seven times, keeping the fastest, so a busy moment on
# the machine does not count):

# %% tags=["nbval-ignore-output", "id-load"]
started = time.perf_counter()
import joblib
import sklearn.ensemble  # imported to be timed: what a model server pays at start
import sklearn.linear_model  # noqa: F401

import_ms = (time.perf_counter() - started) * 1000
print(f"importing joblib and scikit-learn's models: {import_ms:.0f} ms")
files = {"iris": Path("data/models/iris/model.joblib"), "digits": Path("data/models/digits-forest/model.joblib")}
load_samples_ms = {name: [] for name in files}
for _ in range(7):  # the files in turns, so a busy moment slows both; the fastest of each is its cost
    for name, path in files.items():
        started = time.perf_counter()
        joblib.load(path)
        load_samples_ms[name].append((time.perf_counter() - started) * 1000)
file_load_ms = {name: min(samples) for name, samples in load_samples_ms.items()}
for name, path in files.items():
    print(f"{name:<7} {path.stat().st_size / 1024:8.1f} KiB on disk, deserialised in {file_load_ms[name]:6.2f} ms "
          f"(the pod's whole model load: {startup[name]['model_load_seconds'] * 1000:.0f} ms)")

# %% tags=["id-load-check"]
assert files["digits"].stat().st_size > 100 * files["iris"].stat().st_size
assert file_load_ms["digits"] > 5 * file_load_ms["iris"]
print("✓ the larger file takes much longer to deserialise, yet both pods spend most of their load importing the framework")

# %% tags=["id-cold-plot"]
figure, ax = plt.subplots(figsize=(9, 2.4))
s = startup["digits"]
other = max(cold_ms / 1000 - s["process_start_seconds"] - s["model_load_seconds"], 0.0)
bars = {"digits, cold": {"process start": s["process_start_seconds"] * 1000,
                         "model load": s["model_load_seconds"] * 1000, "the request itself + routing": other * 1000},
        "digits, warm": {"the request itself + routing": warm_ms}}
stacked(ax, bars, ("process start", "model load", "the request itself + routing"))
ax.set_xlabel("milliseconds")
ax.set_title("a request from zero vs a warm one (live)")
plt.tight_layout()
plt.show()

# %% [markdown] tags=["id-cold-discuss"]
# The cold request took about a second — several hundred times a warm one — and almost all of it was
# the pod starting: the Python process, the framework import and the model file. `minReplicas: 1` removes
# this for the price of one pod running all the time. For these two models the file itself is a small
# part (under a megabyte); for a production model of gigabytes, downloaded by the storage-initializer
# from object storage and loaded into memory (or a GPU), model load grows to tens of seconds or minutes
# and dominates the cold start. That is out of reach on a laptop, so we turn to the simulator.

# %% [markdown] tags=["id-sim-intro"]
# ## Explore: the same path, simulated
#
# `labkit.sim.simulate_dataflow` models this path: Poisson requests; the predictor's revision scaled by
# Knative's KPA (the same autoscaler code labkit runs live, via `labkit.sim.autoscaling`), including scale
# to zero and the activator; per-hop costs for the sidecars, mTLS, activator, queue-proxy, transformer and
# the model server (decode, predict, encode) with adaptive batching; cold start = process start + model
# load. Its defaults are the times measured on a laptop like yours. Model presets include a 2 GB model
# whose load takes 25 s.
#
# The dashboard draws where the time goes for a typical request (p50), a slow one (p99), and the mean
# warm and cold request. Try: `min_replicas` 0 vs 1 at 0.05 req/s; the large model; mTLS off; a 5 ms
# transformer; a batcher at 50 req/s.

# %% tags=["nbval-ignore-output", "id-sim-dashboard"]
from labkit.widgets.dataflow import dataflow_dashboard

dashboard = dataflow_dashboard(arrival_rate=0.05, min_replicas=0, model="digits-random-forest")
dashboard

# %% tags=["id-sim-dashboard-check"]
shown = dashboard.result
assert shown.cold.any() and shown.dominant_hop("p99").startswith("cold_start")
kept_warm = dashboard.compute({**dashboard.settings(), "min_replicas": 1})  # what the slider at 1 runs
assert not kept_warm.cold.any() and kept_warm.p99 < shown.p99 / 50
print("✓ at 0.05 req/s, scale to zero puts cold starts at p99; minReplicas: 1 removes them")

# %% [markdown] tags=["id-sim-static-intro"]
# The same comparison as a plain figure (the dashboard above needs a live kernel):

# %% tags=["id-sim-static"]
from labkit.sim.dataflow import HOPS, simulate_dataflow

runs = {f"minReplicas {m}, {model}": simulate_dataflow(arrival_rate=0.05, duration=3600, min_replicas=m, model=model)
        for model in ("digits-random-forest", "large-model-2GB") for m in (0, 1)}
for name, run in runs.items():
    print(f"{name:<40} p50 {run.p50:9.2f} ms   p99 {run.p99:10.2f} ms   cold requests {int(run.cold.sum()):3d}"
          f"   dominant at p99: {run.dominant_hop('p99')}")
from labkit.widgets.dataflow import HOP_COLOURS

figure, ax = plt.subplots(figsize=(9, 2.8))
dominant = [run.dominant_hop("p99") for run in runs.values()]
ax.barh(list(runs), [run.p99 for run in runs.values()], color=[HOP_COLOURS[h] for h in dominant])
for y, (run, hop) in enumerate(zip(runs.values(), dominant)):
    ax.text(run.p99 * 1.15, y, hop, va="center", fontsize=9)
ax.set_xscale("log")
ax.set_xlim(1, 3e5)
ax.invert_yaxis()
ax.set_xlabel("p99 latency, ms (log scale); bar colour and label: the dominant hop")
plt.tight_layout()
plt.show()

# %% [markdown] tags=["id-ex-intro"]
# ## Exercises
#
# ### Exercise 1 — find the dominant hop yourself
#
# The dashboard names "the dominant hop at p99". Write that rule: `dominant_hop_near(result, q)` takes a
# `DataflowResult` and a percentile `q`, picks the requests whose end-to-end latency is **closest** to
# the q-th percentile (the nearest 1 % of all requests, at least one), and returns the hop (a name from
# `HOPS`) with the largest **mean** time over those requests. Use `result.latency_ms` (one number per
# request), `result.hops[hop]` (one array per hop, same order) and `result.percentile(q)` — the
# check hands your function results whose ready-made `breakdown()` and `dominant_hop()` are switched
# off. It then compares your answers for three services (`DOMINANT_TASK`) at p50 and p99 with the
# simulator's own.

# %% tags=["id-ex1-task"]
from labkit.grading.lab09 import DOMINANT_DURATION, DOMINANT_TASK

print("hops:", ", ".join(HOPS))
for name, settings in DOMINANT_TASK.items():
    print(f"{name:<26} {settings}")


# %% tags=["id-ex1"]
### BEGIN SOLUTION
def dominant_hop_near(result, q):
    target = result.percentile(q)
    nearest = np.argsort(np.abs(result.latency_ms - target))[: max(1, result.requests // 100)]
    means = {hop: result.hops[hop][nearest].mean() for hop in HOPS}
    return max(means, key=means.get)
### END SOLUTION
dominant = {name: dominant_hop_near(simulate_dataflow(duration=DOMINANT_DURATION, seed=1, **settings), 99)
            for name, settings in DOMINANT_TASK.items()}
print(dominant)

# %% tags=["check", "points-2", "id-ex1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab09 import check_dominant_hops

check_dominant_hops(answer("dominant_hop_near"))

# %% [markdown] tags=["id-ex2-intro"]
# ### Exercise 2 — choose minReplicas for an SLO
#
# The digits service gets a request every 20 s on average (`SLO_TASK`). Each replica kept running costs
# money, so you want the **smallest** `minReplicas` (0 to 3) whose simulated p99 latency meets the SLO.
# Write `choose_min_replicas(slo_ms)`; the check tries a tight SLO (50 ms) and a loose one (5 s).

# %% tags=["id-ex2"]
from labkit.grading.lab09 import SLO_TASK


### BEGIN SOLUTION
def choose_min_replicas(slo_ms):
    for replicas in range(4):
        if simulate_dataflow(min_replicas=replicas, **SLO_TASK).p99 <= slo_ms:
            return replicas
    return None
### END SOLUTION
print({slo: choose_min_replicas(slo) for slo in (50.0, 5000.0)})

# %% tags=["check", "points-2", "id-ex2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab09 import check_min_replicas

check_min_replicas(answer("choose_min_replicas"))

# %% [markdown] tags=["id-cluster"]
# ## On a real cluster
#
# The two InferenceServices of the cold-start part export for a real cluster as in lab 08 (the cell
# below: each model folder becomes a `pvc://` URI, and `README.txt` says how to copy the models in;
# both validate against KServe's CRD). On a cluster with KServe in serverless mode and Istio:
#
# * the path has one more proxy in front: the **Istio ingress gateway** (a standalone Envoy) takes the
#   request from outside for `digits.default.example.com`; inside the mesh a client pod's sidecar
#   talks to the predictor's sidecar as here. Pods get a sidecar when the namespace has
#   `istio-injection=enabled`; mTLS is on by default between sidecars (PERMISSIVE), forced with a
#   `PeerAuthentication` in STRICT mode, off with DISABLE — the same objects as in this lab;
# * KServe tags a cold start with more steps than here: scheduling the pod, maybe **pulling the runtime
#   image** (often the biggest part: hundreds of MB to GBs), the storage-initializer **downloading the
#   model**, then process start and model load. Measure with `kubectl get events` and the pod's
#   timestamps; the simulator's `process_start` and `model_load` are where those numbers go;
# * time per hop comes from Istio's telemetry (`istio_request_duration_milliseconds`, traces in Jaeger
#   or Zipkin) and Knative's queue-proxy metrics, as the access logs and `Server-Timing` did here.

# %% tags=["id-export"]
from labkit.export import export_objects, write_export
from labkit.manifests import load_text

EXPORTED = Path("exported/lab09")
write_export(export_objects(load_text(IRIS_YAML + "---\n" + DIGITS_YAML)), EXPORTED)
print((EXPORTED / "README.txt").read_text())
print((EXPORTED / "05-inferenceservice-default-digits.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# From the repository root, `tools/real-cluster.sh exported/lab09` installs KServe, Knative and Istio at
# pinned versions and asks for step 1 (the model copy) before it applies. By hand, after step 1, time
# a cold start and find where it went:
#
# ```bash
# kubectl label namespace default istio-injection=enabled     # sidecars, as in this lab's mesh part
# # initial-scale "0" is refused unless the cluster allows it (config-autoscaler, knative/serving#8846):
# kubectl patch configmap config-autoscaler -n knative-serving --type merge -p '{"data": {"allow-zero-initial-scale": "true"}}'
# kubectl apply -f exported/lab09/
# kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80 &
# URL=$(kubectl get inferenceservice digits -o jsonpath='{.status.url}')
# time curl -s -H "Host: ${URL#*://}" -H "Content-Type: application/json" \
#      http://127.0.0.1:8080/v2/models/digits/infer \
#      -d '{"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]}]}'
# kubectl get events --sort-by=.lastTimestamp | grep digits   # scheduled, pulled, started: the cold start's steps
# ```

# %% [markdown] tags=["id-summary"]
# ## Summary: the data flow and its bottlenecks
#
# *How does data flow in a KServe production workflow, who is responsible for what, and where are the
# latency bottlenecks?*
#
# A prediction request passes **Istio** first (the client's sidecar routes it by Host name and encrypts it
# with mTLS; the server's sidecar checks and records it), then **Knative Serving** (the activator while the
# revision has no spare capacity, the queue-proxy always), then **KServe's model server** (decode, predict,
# encode) — and, with a transformer, a second Knative Service in front of all that — all run by
# **Kubernetes**. What you measured, hop by hop:

# %% tags=["nbval-ignore-output", "id-summary-numbers"]
proxies = {name: m["client sidecar + wire"] + m["server sidecar"] for name, m in (("mTLS", on), ("plaintext", off))}
print(f"1. The proxy layer: two sidecars took {proxies['mTLS']:.2f} ms of a {on['end to end']:.2f} ms request "
      f"with mTLS ({proxies['plaintext']:.2f} ms in plaintext); the same request without the mesh took "
      f"{on['no mesh']:.2f} ms, and the model's own predict {on['predict']:.3f} ms.")
print(f"   Knative's hops: queue-proxy {on['queue-proxy']:.3f} ms, activator {on['activator']:.3f} ms, and "
      f"{on['Knative HTTP hand-offs']:.2f} ms of HTTP hand-offs between them (target-burst-capacity {TBC:g} "
      f"keeps the activator in the path of a small revision).")
print(f"2. Cold start: the first request to digits at zero took {cold_ms:.0f} ms, {cold_ms / warm_ms:.0f} times a "
      f"warm one ({warm_ms:.2f} ms); the activator held it {cold_timing['activator-wait']:.0f} ms while the pod "
      f"started ({startup['digits']['process_start_seconds']:.2f} s process start + "
      f"{startup['digits']['model_load_seconds']:.2f} s model load). minReplicas: 1 removes that wait.")
print(f"3. Model load: importing scikit-learn took {import_ms:.0f} ms here; deserialising the files took "
      f"{file_load_ms['iris']:.2f} ms (iris) and {file_load_ms['digits']:.1f} ms (digits, 100 trees), whose "
      f"predict costs {predict_ms['digits'] / predict_ms['iris']:.0f} times iris's.")

# %% [markdown] tags=["id-summary-end"]
# For a tiny model the HTTP layers around it cost more than the model; for a heavy one they vanish next
# to it. Per-start costs are a different order: a cold start is a pod start plus model load, and for
# gigabyte models the download and load dominate it — which is why large models are usually run with
# `minReplicas` ≥ 1, and why the simulator's `dominant_hop` at p99 of a rarely used service is the
# cold start.
