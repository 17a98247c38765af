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
# # Lab 08 — KServe's InferenceService: one spec that deploys, scales, versions and serves a model
#
# **What you will learn** (about 60 minutes)
#
# 1. Write an `InferenceService` (storage location + model format + runtime options) and apply it.
# 2. Call a model with KServe's two REST protocols, V1 and V2 (the Open Inference Protocol), with
#    plain HTTP as `curl` would and with NVIDIA's `tritonclient`, and read the status as KServe reports it.
# 3. Build the same serving stack by hand from a Deployment and a Service, and list what is then
#    still missing: revisions, scale to zero, canary traffic, model status.
# 4. Serve a second model format (skops) and roll it out as a canary with `canaryTrafficPercent`,
#    then promote or roll back.
# 5. Build an InferenceService from choices in a dashboard and see its YAML, the Knative objects it
#    becomes and a prediction.

# %% [markdown] tags=["id-idea"]
# ## The idea
#
# A trained model is a file. Serving it means: a server process that loads the file and speaks an
# agreed protocol, replicas that scale with traffic, a stable address, a way to roll out the next
# version without downtime, and a status that says whether the model loaded. KServe packs all of
# this into one Kubernetes kind, `InferenceService`, configured by *what* to serve, not *how*:
#
# ```mermaid
# flowchart LR
#     Y["InferenceService YAML<br/>storageUri + modelFormat"] --> C[KServe controller]
#     C -->|picks a runtime for sklearn| R[ServingRuntime<br/>model server image]
#     C -->|creates| K["Knative Service<br/>&lt;name&gt;-predictor"]
#     K --> REV["Revision 00001, 00002, ...<br/>(one per spec change)"]
#     REV --> P["pod: queue-proxy + kserve-container<br/>storage-initializer copies the model"]
#     U[client] -->|"V1 :predict / V2 /infer"| I[ingress] --> P
# ```
#
# On a cluster the KServe controller turns the spec into a Knative Service (serverless mode), Knative
# into revisions, pods and routes, and Istio carries the traffic. labkit does the same on your laptop:
# `labkit.inference` is the controller and the model server, `labkit.serving` the Knative part; every
# pod is a real process, every call real HTTP on 127.0.0.1.

# %% [markdown] tags=["id-spec-intro"]
# ## The spec
#
# `data/manifests/kserve-iris.yaml` serves a logistic-regression iris classifier saved with joblib.
# The fields are KServe's own: `modelFormat` chooses the runtime (scikit-learn), `storageUri` says where
# the model is (here a folder in this repository; on a cluster `gs://`, `s3://` or `pvc://`),
# `protocolVersion` the REST protocol the runtime declares, and the scaling bounds.
#
# labkit serves the model formats whose runtimes install small: `sklearn`, `xgboost`, `lightgbm` and
# `onnx` (a scikit-learn model converted with skl2onnx), from one table, `labkit.inference.runtimes.FORMATS`,
# and a predictor that is your own Python class (KServe's custom-model contract, `kserve.Model`:
# `labkit.inference.custom`). On a cluster, PyTorch and TensorFlow models are served by KServe's
# TorchServe, Triton and TensorFlow Serving runtimes (`modelFormat` `pytorch`, `tensorflow`, `triton`):
# images of several GB that this laptop lab does not install; the InferenceService YAML is the same.

# %% tags=["id-spec"]
import os
from pathlib import Path

import labkit
from labkit.manifests import ManifestError, load_text

REPO = Path(labkit.__file__).resolve().parents[1]
os.chdir(REPO)  # storageUri paths are relative to the repository, as `labkit up` runs there
IRIS_YAML = Path("data/manifests/kserve-iris.yaml").read_text()
print(IRIS_YAML)
[iris] = load_text(IRIS_YAML)
print(iris.kind, iris.metadata.name, "->", iris.spec.predictor.storage_uri)

# %% [markdown] tags=["id-spec-typo-intro"]
# A manifest with a mistake is refused before anything starts, with the line and the field path
# (here a capitalisation slip that a real API server would also refuse):

# %% tags=["id-spec-typo"]
try:
    load_text(IRIS_YAML.replace("storageUri", "storageURI"))
except ManifestError as error:
    print(error)

# %% [markdown] tags=["id-live-intro"]
# ## Run it for real: apply, call V1 and V2, read the status
#
# The next cell applies the manifest, then calls the model the way a client would:
#
# * **V1** (TensorFlow-Serving style): `POST /v1/models/<name>:predict` with `{"instances": [...]}`.
# * **V2 / Open Inference Protocol**: `POST /v2/models/<name>/infer` with typed tensors
#   (name, shape, datatype, data), plus health and metadata routes.
# * **tritonclient**: NVIDIA's client for the same V2 protocol; by default it sends tensors as raw
#   bytes after a JSON header (Triton's binary extension), which the server understands too.
#
# The model is addressed by the InferenceService's name, as in KServe. One difference from KServe's
# own `kserve-sklearnserver` (which serves V1 and V2 alike): without `outputs` in the request it names
# its output tensor `output-0`; labkit's server names it after the method, `predict` (and also offers
# `predict_proba`), so the cells below ask for `predict`.

# %% tags=["id-live"]
import json

import httpx
import numpy as np
import tritonclient.http as triton

from labkit.cluster import LocalCluster
from labkit.inference.isvc import inference_service
from labkit.net import process_alive

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 3.4, 5.4, 2.3]]
V2_BODY = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS}]}

with LocalCluster() as cluster:
    cluster.apply(IRIS_YAML)
    url = cluster.url("InferenceService", "sklearn-iris")
    v1 = httpx.post(f"{url}/v1/models/sklearn-iris:predict", json={"instances": ROWS})
    v2 = httpx.post(f"{url}/v2/models/sklearn-iris/infer", json=V2_BODY)
    metadata = httpx.get(f"{url}/v2/models/sklearn-iris").json()
    unknown = httpx.post(f"{url}/v2/models/nope/infer", json=V2_BODY)
    bad_shape = httpx.post(f"{url}/v2/models/sklearn-iris/infer",
                           json={"inputs": [{**V2_BODY["inputs"][0], "shape": [2, 3]}]})

    client = triton.InferenceServerClient(url.removeprefix("http://"))
    tensor = triton.InferInput("input-0", [2, 4], "FP64")
    tensor.set_data_from_numpy(np.array(ROWS))
    by_triton = client.infer("sklearn-iris", [tensor]).as_numpy("predict")
    tensor.set_data_from_numpy(np.array(ROWS), binary_data=False)
    by_triton_json = client.infer("sklearn-iris", [tensor]).as_numpy("predict")
    client.close()

    live = inference_service(cluster, "sklearn-iris")
    status = live.kserve_status()
    startup = live.startup_breakdown()
    pids = [p["pid"] for r in live.predictor.revisions.values() for p in r.describe()["pods"]]

print("V1 request :", json.dumps({"instances": ROWS}))
print("V1 response:", v1.status_code, v1.text)
print("V2 response:", v2.status_code, v2.text)
print("tritonclient (binary tensors):", by_triton, " (JSON tensors):", by_triton_json)
print("unknown model:", unknown.status_code, unknown.text)
print("wrong shape  :", bad_shape.status_code, bad_shape.text)
print("V2 metadata  :", json.dumps(metadata))

# %% tags=["id-live-check"]
assert v1.json() == {"predictions": [0, 2]}
assert v2.json()["outputs"][0]["data"] == [0, 2] and v2.json()["model_name"] == "sklearn-iris"
assert by_triton.tolist() == by_triton_json.tolist() == [0, 2]
assert unknown.status_code == 404 and "error" in unknown.json()
assert bad_shape.status_code == 400 and "error" in bad_shape.json()
assert not any(process_alive(pid) for pid in pids), "the cluster should have stopped the model server"
print("✓ V1, V2 and tritonclient agree: setosa (0) and virginica (2); errors come as {'error': ...}")

# %% [markdown] tags=["id-status-intro"]
# ### The status, as `kubectl get isvc sklearn-iris -o yaml` shows it
#
# KServe reports the URL, the conditions (is the predictor ready, is the ingress routed), per component
# which revisions exist and which took all the traffic last (`latestRolledoutRevision`: the one a
# rollback returns to), and the model's own state (`Loaded`, or `FailedToLoad` with the reason).

# %% tags=["id-status"]
import yaml

print(yaml.safe_dump(status, sort_keys=False))

# %% tags=["id-status-check"]
conditions = {c["type"]: c["status"] for c in status["conditions"]}
assert conditions["Ready"] == "True" and conditions["PredictorReady"] == "True"
assert status["components"]["predictor"]["latestRolledoutRevision"] == "sklearn-iris-predictor-00001"
assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"
print("✓ Ready, one revision rolled out, model Loaded")

# %% [markdown] tags=["id-startup-intro"]
# The pod's start-up splits in two, which matters in lab 09: starting the Python process with its
# imports, and loading the model file. (Times are from your machine; nbval does not compare them.)

# %% tags=["nbval-ignore-output", "id-startup"]
[pod] = startup
print(f"process start {pod['process_start_seconds']:.2f} s + model load {pod['model_load_seconds']:.2f} s"
      f" -> ready after {pod['spawn_to_ready_seconds']:.2f} s")

# %% tags=["id-startup-check"]
assert 0 < pod["model_load_seconds"] < pod["spawn_to_ready_seconds"]
print("✓ the model load is one part of the time to ready")

# %% [markdown] tags=["id-by-hand-intro"]
# ## The same model by hand
#
# Without KServe you write the serving stack yourself: a Deployment whose container runs a model
# server with the right arguments, and a Service in front. labkit runs a Deployment's `command` as a
# process, so we point it at the same model server (`python -m labkit.inference.server`); on a cluster
# this would be an image you build and push.

# %% tags=["id-by-hand-yaml"]
import sys

BY_HAND_YAML = f'''
apiVersion: apps/v1
kind: Deployment
metadata: {{name: iris-by-hand}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: iris-by-hand}}}}
  template:
    metadata: {{labels: {{app: iris-by-hand}}}}
    spec:
      containers:
      - name: model-server
        image: my-registry/iris-server:1
        command: [{json.dumps(sys.executable)}, -m, labkit.inference.server,
                  --model-name, iris-by-hand, --storage-uri, data/models/iris]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /v2/health/ready, port: 8080}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: iris-by-hand}}
spec:
  selector: {{app: iris-by-hand}}
  ports: [{{port: 80, targetPort: 8080}}]
'''
def yaml_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


print(f"{yaml_lines(BY_HAND_YAML)} lines of YAML by hand, {yaml_lines(IRIS_YAML)} for the InferenceService")

# %% tags=["id-by-hand"]
from labkit.inference.isvc import inference_service
from labkit.serving.expand import expand, object_names

with LocalCluster() as cluster:
    cluster.apply(BY_HAND_YAML)
    by_hand = httpx.post(cluster.url("Service", "iris-by-hand") + "/v2/models/iris-by-hand/infer",
                         json=V2_BODY)
    by_hand_status = cluster.get("Service", "iris-by-hand").status
    by_hand_objects = [f"{o.kind}/{o.metadata.name}" for o in cluster.objects()]
    cluster.apply(IRIS_YAML)
    knative = inference_service(cluster, "sklearn-iris").predictor
    made_for_you = object_names(expand(knative.obj, live=knative))

print("by hand:", by_hand.status_code, by_hand.json()["outputs"][0]["data"], "from", by_hand_objects)
print()
print("what the InferenceService became (Knative Service sklearn-iris-predictor, expanded):")
for kind, name in made_for_you:
    print(f"  {kind:<18} {name}")

# %% tags=["id-by-hand-check"]
assert by_hand.json()["outputs"][0]["data"] == [0, 2]
assert len(made_for_you) >= 8
print(f"✓ same answer by hand; the InferenceService stands for {len(made_for_you)} objects you did not write")

# %% [markdown] tags=["id-by-hand-discuss"]
# The hand-made stack answers the same request. What it does not have, and what you would have to build:
#
# | you need | by hand | InferenceService |
# |---|---|---|
# | a model server image per framework, with the protocol | build and push your own | `modelFormat` picks a runtime |
# | the model file in the pod | bake it in, or an init container | `storageUri` + storage-initializer |
# | a new model version | edit the Deployment: a rolling update replaces the pods (the old ReplicaSet is kept, scaled to 0) | a new immutable revision, still routable |
# | canary: 10 % to the new model | a second Deployment, a VirtualService with weights | `canaryTrafficPercent: 10` |
# | rollback | `kubectl rollout undo` (back to the previous ReplicaSet, all pods at once) | `canaryTrafficPercent: 0` |
# | scale with traffic, to zero when idle | an HPA: CPU, memory, custom or external metrics (`autoscaling/v2`), but not below 1 replica unless the `HPAScaleToZero` feature gate is on, and nothing holds requests while at zero | `minReplicas: 0`, `scaleTarget`, KPA + activator |
# | "is the model loaded?" | read pod logs | `status.modelStatus`, conditions |
# | request batching, payload logging | write it into the server | `batcher`, `logger` |
#
# The objects listed above are what the one InferenceService stands for: a Knative Configuration,
# Route, Revision, Deployment, autoscaler, ServerlessService, Services and an Ingress. (A Deployment does
# keep history — each template change leaves a ReplicaSet, `kubectl rollout undo` goes back — but only
# one version serves at a time; an HPA scales on any metric `autoscaling/v2` offers, and to zero only
# behind the alpha `HPAScaleToZero` gate, with no activator to hold the first request:
# https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ and
# https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#rolling-back-a-deployment.)

# %% [markdown] tags=["id-canary-intro"]
# ## A second model format, rolled out as a canary
#
# `data/models/iris-skops` holds the same kind of classifier saved with **skops**, a format that stores
# the model's parameters instead of a pickle. Loading a pickle (joblib) runs code from the file, so a
# model store is only as safe as whoever can write to it; skops loads only types you trust. The runtime
# picks the loader from the file.
#
# We change the `storageUri` of `sklearn-iris` to the skops model with `canaryTrafficPercent: 10`.
# KServe then creates revision 00002, gives it 10 % and keeps 90 % on the rolled-out 00001. We send
# 300 requests, count which revision answered each (the `x-labkit-revision` header), then promote
# (remove the field). A second canary is rolled back (`canaryTrafficPercent: 0`).

# %% tags=["id-canary"]
from collections import Counter

SKOPS_YAML = IRIS_YAML.replace("data/models/iris", "data/models/iris-skops")
CANARY_YAML = SKOPS_YAML.replace("    model:", "    canaryTrafficPercent: 10\n    model:")
ROLLBACK_YAML = IRIS_YAML.replace("    model:", "    canaryTrafficPercent: 0\n    model:")
SECOND_CANARY_YAML = IRIS_YAML.replace("    model:", "    canaryTrafficPercent: 10\n    model:")


def traffic(live) -> dict[str, int]:
    return {t["revisionName"]: t["percent"] for t in live.kserve_status()["components"]["predictor"]["traffic"]}


def served_by(url: str, n: int) -> Counter:
    with httpx.Client(base_url=url) as http:
        return Counter(http.post("/v2/models/sklearn-iris/infer", json=V2_BODY).headers["x-labkit-revision"]
                       for _ in range(n))


print(CANARY_YAML)
steps = {}
with LocalCluster() as cluster:
    cluster.apply(IRIS_YAML)
    live = inference_service(cluster, "sklearn-iris")
    cluster.apply(CANARY_YAML)
    steps["canary 10 %"] = (traffic(live), served_by(live.url, 300))
    cluster.apply(SKOPS_YAML)
    steps["promote"] = (traffic(live), served_by(live.url, 50))
    cluster.apply(SECOND_CANARY_YAML)
    steps["second canary"] = (traffic(live), served_by(live.url, 50))
    cluster.apply(ROLLBACK_YAML)
    steps["rollback"] = (traffic(live), served_by(live.url, 50))
    rollout = live.kserve_status()["components"]["predictor"]

# %% tags=["nbval-ignore-output", "id-canary-show"]
for step, (split, counts) in steps.items():
    print(f"{step:<14} spec {split}")
    print(f"{'':<14} served {dict(sorted(counts.items()))}")
print("latestRolledoutRevision:", rollout["latestRolledoutRevision"],
      " previousRolledoutRevision:", rollout["previousRolledoutRevision"])

# %% tags=["id-canary-check"]
split, counts = steps["canary 10 %"]
assert split == {"sklearn-iris-predictor-00002": 10, "sklearn-iris-predictor-00001": 90}
share = counts["sklearn-iris-predictor-00002"] / sum(counts.values())
assert 0.04 <= share <= 0.18, f"about 10 % should reach the canary, got {share:.0%}"
assert set(steps["promote"][1]) == {"sklearn-iris-predictor-00002"}
assert set(steps["rollback"][1]) == {"sklearn-iris-predictor-00002"}
assert rollout["latestRolledoutRevision"] == "sklearn-iris-predictor-00002"
print("✓ about 10 % reached the canary; after promotion only 00002 served; the rollback returned to 00002")

# %% [markdown] tags=["id-canary-discuss"]
# The measured share scatters around 10 % (300 weighted random picks: expect roughly 5–15 %). Note what
# the rollback returned to: not the first revision, but the *last rolled-out* one, 00002, which took
# 100 % when we promoted it. Revision 00003 still exists (a later promotion could use it) but gets 0 %.

# %% [markdown] tags=["id-dashboard-intro"]
# ## Explore: build an InferenceService from choices
#
# The dashboard writes an InferenceService from a few choices — model file, `modelFormat`,
# `protocolVersion`, `minReplicas`/`maxReplicas`, `canaryTrafficPercent` — and shows what labkit's own code
# makes of it: the YAML, validated by the manifest loader (try `grpc-v2`, a format that does not match the
# model file, or minReplicas above maxReplicas); the Knative objects it becomes (the controller's `predictor_knative_service`, expanded),
# with the route split KServe's canary rule gives; and a prediction for one flower. It shows the
# **second** apply of `sklearn-iris`: the first (iris joblib, V2, 1–3 replicas) is rolled out as revision
# 00001, so a changed predictor makes 00002 and the canary percent splits between them. The prediction
# goes through the model server's request handler in this kernel, not over HTTP: starting a server
# process per change would take a second or more (the live calls are the cells above).

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.isvc_builder import isvc_dashboard

builder = isvc_dashboard()
builder

# %% tags=["nbval-ignore-output", "id-dashboard-check"]
assert builder.error is None and dict(builder.result.table.split) == {"sklearn-iris-predictor-00001": 100}
builder.set(model="iris (skops)", canary_percent=10)  # what moving the controls runs
assert dict(builder.result.table.split) == {"sklearn-iris-predictor-00002": 10,
                                            "sklearn-iris-predictor-00001": 90}
builder.set(protocol="grpc-v2")
assert "protocolVersion" in builder.error
builder.set(model="iris (joblib)", protocol="v1", canary_percent=100)
assert builder.result.response == {"predictions": [1]}
builder.set(protocol="v2")
print("✓ the YAML, the Knative objects, the split and the prediction follow the choices")

# %% [markdown] tags=["id-ex-intro"]
# ## Exercises
#
# ### Exercise 1 — write an InferenceService
#
# Serve the digits random forest (`data/models/digits-forest`, scikit-learn) under the name `digits`
# with the V2 protocol. It may scale to zero, must never run more than 2 replicas, and should batch
# requests up to 16 rows (`batcher.maxBatchSize`). Write the YAML as a string.

# %% tags=["id-ex1"]
### BEGIN SOLUTION
DIGITS_YAML = '''
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: digits
spec:
  predictor:
    minReplicas: 0
    maxReplicas: 2
    batcher:
      maxBatchSize: 16
    model:
      modelFormat:
        name: sklearn
      protocolVersion: v2
      storageUri: data/models/digits-forest
'''
### END SOLUTION

# %% tags=["check", "points-2", "id-ex1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab08 import check_digits_isvc

check_digits_isvc(answer("DIGITS_YAML"))


# %% [markdown] tags=["id-ex2-intro"]
# ### Exercise 2 — a V2 request by hand
#
# Write `v2_request(rows)` returning the JSON body (a dict) of a V2 inference request that sends all
# `rows` (lists of 4 floats) in one tensor named `input-0`. The check sends it through the model
# server's own request decoder.

# %% tags=["id-ex2"]
### BEGIN SOLUTION
def v2_request(rows):
    return {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])],
                        "datatype": "FP64", "data": rows}]}
### END SOLUTION


# %% tags=["check", "points-2", "id-ex2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab08 import check_v2_request

check_v2_request(answer("v2_request"))

# %% [markdown] tags=["id-ex3-intro"]
# ### Exercise 3 — canary arithmetic
#
# The InferenceService `shop` is applied five times in a row (every apply changes the model or the
# canary field; each new model makes a revision `shop-predictor-0000N`, and each becomes ready):

# %% tags=["id-ex3-steps"]
from labkit.grading.lab08 import CANARY_TASK_STEPS

for i, (model, percent) in enumerate(CANARY_TASK_STEPS, 1):
    field = "no canaryTrafficPercent" if percent is None else f"canaryTrafficPercent: {percent}"
    print(f"apply {i}: {model:<9} {field}")

# %% [markdown] tags=["id-ex3-ask"]
# After the fifth apply, what is the traffic split (revision name -> percent; you may leave out
# revisions at 0 %), and which revision is `latestRolledoutRevision`?

# %% tags=["id-ex3"]
### BEGIN SOLUTION
final_split = {"shop-predictor-00002": 100}
latest_rolled_out = "shop-predictor-00002"
### END SOLUTION

# %% tags=["check", "points-2", "id-ex3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab08 import check_canary

check_canary(answer("final_split"), answer("latest_rolled_out"))

# %% [markdown] tags=["id-cluster"]
# ## On a real cluster
#
# The manifest is KServe's. `labkit export data/manifests/kserve-iris.yaml -o exported/lab08` (the cell
# below does the same in Python) writes it in the form the API server takes (it validates against
# KServe's CRD), with the one change a cluster needs: the model folder on this machine becomes a
# `pvc://` URI on a claim the export creates, and `README.txt` gives the commands that copy the model
# into it (KServe's "InferenceService with a saved model on PVC"). What differs from the laptop:
#
# * `storageUri` must be a place the cluster can read (`gs://`, `s3://`, `pvc://`, `https://`); a
#   storage-initializer container copies the model to `/mnt/models` before the server starts.
#   labkit refuses remote schemes offline with a message naming the field.
# * The runtime is a `ClusterServingRuntime` running a container image: `kserve-sklearnserver` serves
#   both V1 and V2 (MLServer is the other sklearn runtime for V2); labkit runs its own model server as
#   a process.
# * The URL is `http://sklearn-iris.default.example.com` through the Istio ingress gateway: `example.com`
#   is the domain KServe's quick-install script sets in Knative's `config-domain` (Knative's own default
#   since v1.11 is `svc.cluster.local`; set your domain there). labkit gives each InferenceService a
#   loopback port and, through the mesh, that Host name.
# * Requests cross the ingress gateway, a sidecar, the activator (when scaled to zero) and the
#   queue-proxy: lab 09 measures what each costs.

# %% tags=["id-export"]
from labkit.export import export_objects, write_export

EXPORTED = Path("exported/lab08")
write_export(export_objects(load_text(IRIS_YAML)), EXPORTED)
print((EXPORTED / "README.txt").read_text())
print((EXPORTED / "05-inferenceservice-default-sklearn-iris.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# From the repository root: `tools/real-cluster.sh exported/lab08` installs KServe (with Knative,
# Istio and cert-manager) at pinned versions and stops before applying, asking for the model copy of
# step 1; then `SKIP_INSTALL=1 STEPS_DONE=1 tools/real-cluster.sh exported/lab08` applies the folder,
# waits for the InferenceService to be Ready and calls it. By hand, after step 1:
#
# ```bash
# kubectl apply -f exported/lab08/
# kubectl get inferenceservice sklearn-iris            # READY True, its URL
# kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80 &
# URL=$(kubectl get inferenceservice sklearn-iris -o jsonpath='{.status.url}')
# curl -H "Host: ${URL#*://}" -H "Content-Type: application/json" \
#      http://127.0.0.1:8080/v2/models/sklearn-iris/infer \
#      -d '{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [[6.8, 2.8, 4.8, 1.4]]}]}'
# ```

# %% [markdown] tags=["id-summary"]
# ## Summary: what an InferenceService is for
#
# *What is the main function of an InferenceService in KServe, and its role in ML deployment?*
#
# It is the **one declarative object** that turns "this model file, this format" into a running,
# versioned, autoscaled prediction endpoint. From your run:

# %% tags=["nbval-ignore-output", "id-summary-numbers"]
print(f"- {yaml_lines(IRIS_YAML)} lines of YAML named a storage location and a model format; the model server "
      f"started in {pod['process_start_seconds']:.2f} s and loaded the model in {pod['model_load_seconds']:.2f} s, "
      f"then answered V1 {v1.json()['predictions']}, V2 {v2.json()['outputs'][0]['data']} and tritonclient "
      f"{by_triton.tolist()} alike; its status said {status['modelStatus']['states']['activeModelState']}.")
print(f"- By hand the same endpoint took {yaml_lines(BY_HAND_YAML)} lines ({len(by_hand_objects)} objects) and had "
      f"no revisions, scale to zero, canary or model status; the InferenceService stood for "
      f"{len(made_for_you)} objects you did not write.")
canary_split, canary_counts = steps["canary 10 %"]
print(f"- canaryTrafficPercent: 10 sent {canary_counts['sklearn-iris-predictor-00002']} of "
      f"{sum(canary_counts.values())} requests to the skops revision; removing the field promoted it, "
      f"and a rollback returned to {rollout['latestRolledoutRevision']}.")

# %% [markdown] tags=["id-summary-end"]
# That is the role: data scientists state *what* to serve; KServe, Knative and Istio handle *how*. Lab 09
# follows a request through those layers and measures where its time goes.
