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
# # Lab 10 — Canaries and A/B tests for models: weighted routing, quality gates, rollback
#
# **What you will learn** (about 75 minutes)
#
# 1. Split traffic 90/10 between two model versions three ways — Istio VirtualService weights, a
#    Knative traffic block, KServe's `canaryTrafficPercent` — measure the split over real requests,
#    and say what each way needs.
# 2. Let **Flagger** roll a new model out step by step, judged not only by HTTP success but by the
#    model's **accuracy on labelled feedback**; watch it promote a better model and roll back a
#    worse one, with the timeline of its decisions and the numbers behind each.
# 3. Run an **A/B test** with sticky users and decide it with statistics: a two-proportion z-test, a
#    bootstrap interval, and the sample size the test needs.
# 4. Send **shadow** traffic to a candidate and compare its predictions offline.
# 5. Recognise the pitfalls: a route to a subset with no pods, metrics mixed across versions,
#    a canary healthy on latency but worse on accuracy, retries that hide a canary's failures.

# %% [markdown] tags=["id-idea"]
# ## The idea
#
# A new model version is a risk that offline evaluation cannot remove: live inputs drift, and a model
# that was better on last month's test set can be worse on today's users. A **canary** sends a small,
# growing share of real traffic to the new version and watches it; an **A/B test** splits users into
# two groups for long enough to decide, with statistics, which version is better. Both need the same
# machinery: **weighted routing** (the mesh picks a version per request), **per-version metrics**
# (success rate, latency and, for models, accuracy once the true labels arrive) and an **automatic
# decision** (advance, halt, roll back).
#
# ```mermaid
# flowchart LR
#     U[users] --> S["caller's sidecar<br/>VirtualService weights<br/>retries"]
#     S -->|"90 %"| P["digits-primary<br/>(model v1)"]
#     S -->|"10 %"| C["digits-canary<br/>(model v2)"]
#     P & C -->|"logged predictions<br/>(KServe logger)"| M[model monitor]
#     U -.->|"true labels, later<br/>(by request id)"| M
#     F[Flagger] -->|"every interval:<br/>success rate (destination side)"| C
#     F -->|"rollout webhook: accuracy gate"| M
#     F -->|"advance / halt / roll back:<br/>rewrite the weights"| S
# ```
#
# Flagger (`flagger.app/v1beta1` `Canary`) is what teams install to automate this on Istio and Knative;
# labkit runs its analysis as a local controller with the same YAML, the same steps and the same event
# messages. Every model version is a real model-server process, every request real HTTP through real
# sidecars on 127.0.0.1.

# %% [markdown] tags=["id-models-intro"]
# ## Three model versions
#
# `data/models/` holds three versions of a digits classifier (8x8 images, scikit-learn, saved with
# skops), trained by `data/models/train.py` on different amounts of data. **v3 is deliberately worse**:
# it saw only 80 training images. Their accuracy on the same 540 held-out digits, computed here with
# the model server's own loader:

# %% tags=["id-models"]
import json
import os
from pathlib import Path

import labkit
from labkit.canary_lab import MODELS, holdout, holdout_accuracy

REPO = Path(labkit.__file__).resolve().parents[1]
os.chdir(REPO)
trained = json.loads((MODELS / "digits-versions.json").read_text())["versions"]
offline = {version: holdout_accuracy(version) for version in ("v1", "v2", "v3")}
for version, accuracy in offline.items():
    print(f"{version}: trained on {trained[version]['training_rows']:>4} images, "
          f"held-out accuracy {accuracy:.2%} ({len(holdout()[0])} digits)")

# %% tags=["id-models-check"]
assert offline["v2"] > offline["v1"] > offline["v3"]
assert offline["v1"] - offline["v3"] > 0.05
print("✓ v2 is the better model, v3 is more than 5 points worse than v1")

# %% [markdown] tags=["id-split-intro"]
# ## 1. The same 90/10 split, three ways
#
# Everything below runs in one local cluster. The namespace `default` asks for sidecars
# (`istio-injection: enabled`); `digits-v1` and `digits-v2` are Deployments behind one Service
# `digits`, labelled `version: v1` / `v2`; `digits-v3` exists with **0 replicas** for now. The model
# monitor (`model-monitor.yaml`) receives every logged prediction; a second one (`shadow-monitor`)
# is for section 5.

# %% tags=["nbval-ignore-output", "id-cluster"]
from collections import Counter

import httpx
import yaml

from labkit.canary_lab import (
    ModelTraffic,
    inference_service,
    knative_model_service,
    model_deployment,
    timeline,
    watch_rollout,
)
from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane

MANIFESTS = REPO / "data" / "manifests"
cluster = LocalCluster()
# One apply, judged as a whole (as `istioctl analyze` judges a set of files): the subsets
# the DestinationRule names and the Deployments whose pods they select arrive together.
cluster.apply([MANIFESTS / "lab10-digits-mesh.yaml", MANIFESTS / "model-monitor.yaml",
               MANIFESTS / "lab10-shadow-monitor.yaml", model_deployment("v1"), model_deployment("v2"),
               model_deployment("v3", replicas=0, logger_url="http://shadow-monitor.default/")])
plane = control_plane(cluster)      # the mesh's control plane, as istiod
sleep = plane.client()              # a caller with its own sidecar, like Istio's `sleep` sample
MONITOR = cluster.url("Service", "model-monitor")
SHADOW_MONITOR = cluster.url("Service", "shadow-monitor")
print(cluster.status())

# %% [markdown] tags=["id-split-istio-intro"]
# ### 1a. Istio: VirtualService weights over DestinationRule subsets
#
# Two objects: a **DestinationRule** names the subsets by pod label, a **VirtualService** gives each
# subset a weight. The caller's sidecar picks a subset **per request**, at random with those weights.
# Each request below sends 10 digits and carries a request id; the answer says which model version
# made it (`model_version`, from the server's `--model-version`).

# %% tags=["nbval-ignore-output", "id-split-istio"]
docs = list(yaml.safe_load_all((MANIFESTS / "lab10-digits-mesh.yaml").read_text()))
VS_90_10 = next(d for d in docs if d["kind"] == "VirtualService")
DR_SUBSETS = next(d for d in docs if d["kind"] == "DestinationRule")
print(yaml.safe_dump(VS_90_10["spec"], sort_keys=False))
N_SPLIT = 300
splits = {"Istio VirtualService": ModelTraffic("http://digits", proxy=sleep.outbound_url).send(N_SPLIT).served}
print(dict(splits["Istio VirtualService"]))

# %% [markdown] tags=["id-split-knative-intro"]
# ### 1b. Knative: the Service's traffic block
#
# A Knative Service keeps every revision it ever made. Applying a new template makes revision
# `digits-kn-v2`; its `traffic` block pins 90 % to the old revision by name and gives 10 % to
# `latestRevision`. The route picks per request too; the answer's `x-labkit-revision` header (and the
# model version) says who answered.

# %% tags=["nbval-ignore-output", "id-split-knative"]
cluster.apply(knative_model_service("v1"))
KSVC_90_10 = knative_model_service("v2", [{"revisionName": "digits-kn-v1", "percent": 90},
                                          {"latestRevision": True, "percent": 10}])
cluster.apply(KSVC_90_10)
print(yaml.safe_dump({"traffic": KSVC_90_10["spec"]["traffic"]}, sort_keys=False))
splits["Knative traffic"] = ModelTraffic(cluster.url("ksvc", "digits-kn")).send(N_SPLIT).served
print(dict(splits["Knative traffic"]))

# %% [markdown] tags=["id-split-kserve-intro"]
# ### 1c. KServe: `canaryTrafficPercent`
#
# An InferenceService changed to the v2 model with `canaryTrafficPercent: 10`: KServe makes predictor
# revision 00002 and writes the Knative traffic block itself (10 % to the new revision, 90 % to the last
# rolled-out one). One field, and the answer names the revision.

# %% tags=["nbval-ignore-output", "id-split-kserve"]
cluster.apply(inference_service("v1"))
ISVC_CANARY = inference_service("v2", canary_percent=10)
cluster.apply(ISVC_CANARY)
print(yaml.safe_dump({"predictor": {k: v for k, v in ISVC_CANARY["spec"]["predictor"].items()
                                    if k != "model"}}, sort_keys=False))
splits["KServe canaryTrafficPercent"] = ModelTraffic(cluster.url("InferenceService", "digits")).send(N_SPLIT).served
print(dict(splits["KServe canaryTrafficPercent"]))

# %% [markdown] tags=["id-split-compare-intro"]
# The weight is a probability per request, so the canary's count over 300 requests is binomial: the
# central 99.9 % interval of Binomial(300, 0.10) is the range a correct 10 % split stays inside
# (bench/bench_canary.py does the same over 10,000 requests per way).

# %% tags=["nbval-ignore-output", "id-split-compare"]
from scipy.stats import binom

low, high = binom.interval(0.999, N_SPLIT, 0.10)
CANARY_NAMES = {"v2", "digits-predictor-00002"}
canary_share = {}
for way, counts in splits.items():
    canary = sum(n for who, n in counts.items() if who in CANARY_NAMES)
    canary_share[way] = canary / N_SPLIT
    print(f"{way:<28} canary {canary:>3} of {N_SPLIT} = {canary / N_SPLIT:5.1%}   "
          f"(99.9 % interval {low:.0f}-{high:.0f})")

# %% tags=["id-split-check"]
assert all(sum(c.values()) == N_SPLIT and not any(k.startswith(("HTTP", "error")) for k in c)
           for c in splits.values())
assert all(low <= share * N_SPLIT <= high for share in canary_share.values()), canary_share
cluster.delete("ksvc", "digits-kn")
cluster.delete("InferenceService", "digits")
print("✓ all three ways sent about 10 % to the new version, inside the binomial interval")

# %% [markdown] tags=["id-split-discuss"]
# | | Istio weights | Knative traffic | KServe `canaryTrafficPercent` |
# |---|---|---|---|
# | what you write | DestinationRule (subsets by label) + VirtualService (weights) | the Service's `traffic` block | one field on the InferenceService |
# | the versions are | any pods with a `version` label (two Deployments) | immutable revisions of one Service | revisions of the predictor |
# | who picks per request | the **caller's** sidecar | the Knative route (ingress / activator) | the Knative route |
# | rollback | edit the weights | edit the traffic block | `canaryTrafficPercent: 0` (back to the last rolled-out revision) |
# | match by header / cookie (A/B) | yes (`match`) | no (tags give a separate URL) | no |
# | needs | a mesh, sidecars, consistent labels | Knative Serving | KServe on Knative |
#
# None of them **decides** anything: someone has to watch the new version and move the weights. That is
# what Flagger automates.

# %% [markdown] tags=["id-flagger-intro"]
# ## 2. Flagger rolls the better model out
#
# The Canary below (`data/manifests/lab10-canary.yaml`) targets the Deployment `digits` in namespace
# `prod`. Flagger then:
#
# * makes `digits-primary` (a copy that serves everyone), the Services `digits`, `digits-primary`,
#   `digits-canary`, and a VirtualService sending 100 % to the primary; scales `digits` to zero
#   (phase **Initialized**);
# * when the Deployment's pod template changes (a new model), scales it up and, every `interval`,
#   runs the **analysis**: the canary's `request-success-rate` as its own sidecar counts it
#   (`reporter="destination"`, no Prometheus needed: the same counters Flagger's query reads), and a
#   **rollout webhook**, the model monitor's quality gate: the canary's accuracy on the labels sent back
#   so far may be at most `maxDrop` points below the primary's, each over at least `minSamples` labelled
#   rows (403 when worse, 412 while there are too few labels — both failed checks);
# * all checks pass: advance the weight by `stepWeight` up to `maxWeight`, then **promote** (copy the
#   template to the primary, route everything back to it); `threshold` failed checks: **roll back**.
#
# Intervals are 2 s here so the lab runs in reasonable time; in production they are minutes. Users keep
# sending requests (20 a second, 20 digits each) and, a moment later, the true labels, all the time.

# %% tags=["id-flagger-yaml"]
print((MANIFESTS / "lab10-canary.yaml").read_text())

# %% tags=["nbval-ignore-output", "id-flagger-setup"]
import tempfile

os.environ["LABKIT_FLAGGER_STATE"] = tempfile.mkdtemp(prefix="lab10-flagger-")  # a fresh rollout history
PROD = {"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"istio-injection": "enabled"}}}
CANARY = yaml.safe_load((MANIFESTS / "lab10-canary.yaml").read_text())
cluster.apply([PROD, model_deployment("v1", name="digits", namespace="prod")])
cluster.apply(CANARY)
# 20 requests a second, as the load test in Flagger's tutorials sends (`hey -z 1m -q 10 -c 2`:
# 10 per second from each of 2 workers)
users = ModelTraffic("http://digits.prod", proxy=plane.client("prod").outbound_url,
                     monitors=[MONITOR], rows=20, workers=3, rate=20)
print(cluster.get("Canary", "digits", "prod").status.detail["status"]["phase"])


# %% tags=["nbval-ignore-output", "id-flagger-promote"]
def rollout(version: str) -> tuple[list, list]:
    # apply a new model version under steady traffic; watch until Flagger finishes
    before = len(cluster.get("Canary", "digits", "prod").status.detail["events"])
    with users:
        cluster.apply(model_deployment(version, name="digits", namespace="prod"))
        watched = watch_rollout(cluster, "digits", "prod", before)
    return watched, timeline(cluster.get("Canary", "digits", "prod").status.detail)[before:]


def show(watched: list, events: list) -> None:
    print("phase / canary weight over time:", " -> ".join(f"{p} {w}% @{t:.0f}s" for t, p, w in watched))
    for t, kind, message in events:
        print(f"{t - events[0][0]:6.1f}s {kind:<8} {message[:160]}")


promoted_watch, promoted_events = rollout("v2")
show(promoted_watch, promoted_events)

# %% tags=["id-flagger-promote-check"]
primary = cluster.get("Deployment", "digits-primary", "prod").object
promoted_messages = [m for _, _, m in promoted_events]
assert any(m.startswith("Promotion completed!") for m in promoted_messages), promoted_messages
assert "digits.prod canary weight 50" in " ".join(promoted_messages)
assert "digits-v2" in " ".join(primary.spec.template.spec.containers[0].args)
print("✓ v2 advanced to 50 % and was promoted: digits-primary now serves model v2")

# %% [markdown] tags=["id-flagger-promote-discuss"]
# Read the timeline: *New revision detected* (the template changed), *Advance ... canary weight 25*, a
# first check that may fail with `insufficient` (the gate's 412: the canary has answered too few
# labelled requests yet — a failed check, as Flagger counts a metric with no data), then *Advance ...
# 50*, *Copying ... template spec to digits-primary*, *Routing all traffic to primary*, *Promotion
# completed!*. The gap before the copy is the new primary pod starting and loading the model.

# %% [markdown] tags=["id-flagger-rollback-intro"]
# ## 3. ... and rolls the worse model back
#
# Now v3, the model trained on 80 images. It answers every request with HTTP 200, as fast as v2: the
# success-rate metric cannot see anything wrong. The gate's metadata names the versions it compares:

# %% tags=["nbval-ignore-output", "id-flagger-rollback"]
gate = CANARY["spec"]["analysis"]["webhooks"][0]
gate["metadata"].update(canary="v3", primary="v2")
cluster.apply(CANARY)
failed_watch, failed_events = rollout("v3")
show(failed_watch, failed_events)

# %% tags=["id-flagger-rollback-check"]
failed_messages = [m for _, _, m in failed_events]
assert any(m.startswith("Canary failed!") for m in failed_messages), failed_messages
assert any('"result":"fail"' in m and "> maxDrop 2" in m for m in failed_messages)
assert not any("success rate" in m for m in failed_messages)   # HTTP never looked wrong
vs = cluster.get("VirtualService", "digits", "prod").object.spec
assert [r["weight"] for r in vs["http"][0]["route"]] == [100, 0]
assert "digits-v2" in " ".join(cluster.get("Deployment", "digits-primary", "prod").object.spec.template.spec.containers[0].args)
accuracy_seen = {v: round(a, 3) for v, a in users.accuracy().items()}
print("✓ v3 failed the accuracy gate (never the success rate) and was rolled back; v2 still serves")

# %% tags=["nbval-ignore-output", "id-flagger-rollback-numbers"]
rollback_t = next(t for t, _, m in failed_events if m.startswith("Rolling back"))
first_fail_t = next(t for t, _, m in failed_events if "external check" in m)
print(f"first failed check -> rollback: {rollback_t - first_fail_t:.1f} s "
      f"(threshold {CANARY['spec']['analysis']['threshold']} x interval 2 s = "
      f"{CANARY['spec']['analysis']['threshold'] * 2} s, + up to one interval)")
print("accuracy per version, as the users' labels say:", accuracy_seen)
print("requests answered per version during both rollouts:", dict(users.served))

# %% [markdown] tags=["id-flagger-rollback-discuss"]
# Every halt message carries the gate's answer: the canary's accuracy, how many labelled rows it is
# based on, and the bound it missed. After `threshold` failed checks Flagger routes everything back
# to the primary and scales the canary to zero. Only the requests routed to the canary during those
# few intervals ever met v3.

# %% [markdown] tags=["id-ab-intro"]
# ## 4. An A/B test with sticky users
#
# A canary asks "is the new version *not worse*?" quickly. An A/B test asks "which is *better*?", and
# needs each **user** to stay with one version (a user who sees both cannot be counted for either, and
# the experience flips). In Istio that is **consistent hashing** on a user header in the
# DestinationRule: the caller's sidecar hashes `x-user` onto the endpoints of `digits`, v1's pod and
# v2's, so the same user always reaches the same pod. 200 users send 600 requests of 20 digits.

# %% tags=["nbval-ignore-output", "id-ab"]
AB_RULES = f'''
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: digits}}
spec:
  host: digits
  trafficPolicy:
    loadBalancer:
      consistentHash: {{httpHeaderName: x-user}}
  subsets: {json.dumps(DR_SUBSETS["spec"]["subsets"])}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: digits}}
spec:
  hosts: [digits]
  http:
    - route:
        - destination: {{host: digits}}
'''
cluster.apply(AB_RULES)
ab = ModelTraffic("http://digits", proxy=sleep.outbound_url, monitors=[MONITOR],
                  users=200, rows=20, seed=1).send(600)
switched = sorted(u for u, versions in ab.by_user.items() if len(versions) > 1)
per_version_users = Counter(next(iter(v)) for v in ab.by_user.values())
measured = {v["version"]: v for v in httpx.get(MONITOR + "/accuracy").json()["versions"]
            if v["namespace"] == "default"}
print(f"{len(ab.by_user)} users; users who saw both versions: {len(switched)}; users per version: {dict(per_version_users)}")
for version in ("v1", "v2"):
    row = measured[version]
    print(f"{version}: {row['correct']} of {row['labelled']} labelled rows right = {row['accuracy']:.2%}")

# %% tags=["id-ab-check"]
assert switched == [] and set(per_version_users) == {"v1", "v2"}
assert all(measured[v]["labelled"] > 1000 for v in ("v1", "v2"))
print("✓ every user stayed on one version; both versions have labelled predictions")

# %% [markdown] tags=["id-ab-stats-intro"]
# ### Deciding it
#
# Each labelled row is a trial (right or wrong), so comparing the accuracies is comparing two
# proportions. `labkit.quality.abtest` has the three tools (small functions, tested in
# `tests/test_quality_abtest.py`): a two-sided **two-proportion z-test**, a **bootstrap interval** of
# the difference (resampling each arm's outcomes), and the **sample size** per arm needed to detect a
# difference of that size with 80 % power at α = 0.05.

# %% tags=["nbval-ignore-output", "id-ab-stats"]
import numpy as np

from labkit.quality.abtest import bootstrap_difference, sample_size_per_arm, two_proportion_z_test

a, b = measured["v1"], measured["v2"]
z_test = two_proportion_z_test(a["correct"], a["labelled"], b["correct"], b["labelled"])
outcomes = {v: np.repeat([1, 0], [m["correct"], m["labelled"] - m["correct"]]) for v, m in (("v1", a), ("v2", b))}
interval = bootstrap_difference(outcomes["v1"], outcomes["v2"], seed=0)
needed_per_arm = sample_size_per_arm(a["accuracy"], b["accuracy"])
print(f"v2 - v1 = {z_test.difference:+.2%}; z = {z_test.z:.2f}, p = {z_test.p_value:.2g}")
print(f"95 % bootstrap interval of the difference: [{interval.low:+.2%}, {interval.high:+.2%}]")
print(f"labelled rows needed per arm to detect this difference (alpha 0.05, power 0.8): {needed_per_arm:,}; "
      f"we have {a['labelled']:,} and {b['labelled']:,}")
decision = "ship v2" if z_test.significant() and z_test.difference > 0 else (
    "keep v1" if z_test.significant() else "keep testing")
print("decision:", decision)

# %% tags=["id-ab-stats-check"]
assert z_test.difference > 0 and interval.low <= z_test.difference <= interval.high
assert (decision == "ship v2") == (z_test.significant() and z_test.difference > 0)
print("✓ the z-test, the bootstrap interval and the sample size were computed from the labelled rows")

# %% [markdown] tags=["id-ab-discuss"]
# With about 1.5 points between the models, a few hundred labelled rows per arm decide nothing (try
# `sample_size_per_arm(0.961, 0.976)`): thousands are needed. That is why A/B tests of models run for
# days, and why the labels must be joined to the version that made each prediction. labkit simplifies:
# the rows are drawn from one fixed held-out set, labels arrive within a second, and every row is treated
# as independent (rows of one user are usually correlated; a careful test counts users, not rows).
# Flagger can run A/B tests too (`analysis.match` on a header or cookie, with `iterations`), routing only
# the matching users to the canary.

# %% [markdown] tags=["id-shadow-intro"]
# ## 5. Shadow traffic: the candidate answers, nobody sees it
#
# **Mirroring** sends a copy of each request to the candidate and throws its answer away: users are
# never exposed, yet the candidate sees real inputs. The copy carries the same request id. Its Host is
# the request's own (`digits`) since Istio 1.28; before, Envoy appended `-shadow` (`digits-shadow`,
# as Istio's mirroring task still shows), and a few tools tell copies from traffic by it. v3 logs
# its predictions to the second monitor, and the labels go to both monitors, so its accuracy is
# measured on exactly the requests users sent.

# %% tags=["nbval-ignore-output", "id-shadow"]
cluster.apply(model_deployment("v3", logger_url="http://shadow-monitor.default/"))   # scale v3 to 1
cluster.apply([DR_SUBSETS, {**VS_90_10, "spec": {"hosts": ["digits"], "http": [{
    "route": [{"destination": {"host": "digits", "subset": "v1"}}],
    "mirror": {"host": "digits", "subset": "v3"}, "mirrorPercentage": {"value": 100.0}}]}}])
shadowed = ModelTraffic("http://digits", proxy=sleep.outbound_url, monitors=[MONITOR, SHADOW_MONITOR],
                        rows=20, seed=2).send(200)
shadow_rows = {v["version"]: v for v in httpx.get(SHADOW_MONITOR + "/accuracy").json()["versions"]}
inbound = [line for line in plane.sidecar("digits-v3").telemetry.access_log() if "/v2/models" in line]
print("users were answered by:", dict(shadowed.served))
print(f"on the same {shadowed.rows * sum(shadowed.served.values())} digits: v1 (live) "
      f"{shadowed.accuracy()['v1']:.2%}, v3 (shadow) {shadow_rows['v3']['accuracy']:.2%}")
print("a request as v3's sidecar saw it:", inbound[-1])

# %% tags=["id-shadow-check"]
assert set(shadowed.served) == {"v1"}
assert shadow_rows["v3"]["labelled"] == 200 * 20
assert shadow_rows["v3"]["accuracy"] < shadowed.accuracy()["v1"]
assert len(inbound) == 200
print("✓ users only met v1; the shadow v3 answered all 200 copies and scored lower, offline")

# %% [markdown] tags=["id-pitfalls-intro"]
# ## 6. Pitfalls
#
# ### 6a. A route to a subset with no pods
#
# A VirtualService sends 10 % to subset `v4` — named in the DestinationRule, but nothing with
# `version: v4` runs (a typo in a label, or the route applied before the Deployment). Envoy has no
# endpoint for that cluster: **503 with the flag `UH`, "no healthy upstream"** for one request in ten.
# Istio accepts the config; `istioctl analyze` reports it (IST0173), and so does labkit when the
# objects are applied (the warning below) and in the DestinationRule's `status.validationMessages`.
# A route to a subset that no DestinationRule defines is IST0101 (and 503 `NR`).

# %% tags=["nbval-ignore-output", "id-pitfall-no-pods"]
dr_v4 = {**DR_SUBSETS, "spec": {**DR_SUBSETS["spec"], "subsets": [*DR_SUBSETS["spec"]["subsets"],
                                                                 {"name": "v4", "labels": {"version": "v4"}}]}}
vs_v4 = {**VS_90_10, "spec": {"hosts": ["digits"], "http": [{"route": [
    {"destination": {"host": "digits", "subset": "v1"}, "weight": 90},
    {"destination": {"host": "digits", "subset": "v4"}, "weight": 10}]}]}}
cluster.apply([dr_v4, vs_v4])
misrouted = ModelTraffic("http://digits", proxy=sleep.outbound_url).send(200)
uh = [line for line in sleep.telemetry.access_log() if " 503 UH " in line]
print(dict(misrouted.served))
print(uh[-1])

# %% tags=["id-pitfall-no-pods-check"]
assert set(misrouted.served) == {"v1", "HTTP 503"} and 5 <= misrouted.served["HTTP 503"] <= 45
assert "outbound|80|v4|digits" in uh[-1]
cluster.apply([DR_SUBSETS, VS_90_10])
print("✓ about 10 % of requests got 503 UH: the subset had no endpoints")

# %% [markdown] tags=["id-pitfall-mixed-intro"]
# ### 6b. Metrics mixed across versions
#
# Everything per version depends on a label saying which version served: `version` on the pods (Istio's
# `destination_version`), `--model-version` on the model server (the monitor's `version`). Drop it and the
# two versions' numbers pool into one. With the shadow run's numbers: a dashboard without the label
# would show one accuracy, between the two, that passes a gate v3 alone fails.

# %% tags=["nbval-ignore-output", "id-pitfall-mixed"]
live_rows, live_correct = shadowed.answered_rows["v1"], shadowed.correct["v1"]
pooled = (live_correct + shadow_rows["v3"]["correct"]) / (live_rows + shadow_rows["v3"]["labelled"])
print(f"v1 {live_correct / live_rows:.2%}, v3 {shadow_rows['v3']['accuracy']:.2%}, "
      f"pooled without a version label {pooled:.2%}")

# %% tags=["id-pitfall-mixed-check"]
assert shadow_rows["v3"]["accuracy"] < pooled < live_correct / live_rows
print("✓ the pooled number hides how much worse v3 is")

# %% [markdown] tags=["id-pitfall-quality-intro"]
# ### 6c. Healthy on latency, worse on accuracy
#
# Section 3 showed it live: v3 answered every request with 200, as fast as v2. The simulator
# (`labkit.sim.canary`, which runs the same Flagger analysis step as the live controller on a modelled
# fleet: 10 requests/s, 30 % of labels returned) repeats it 200 times, for a new model 5 points less
# accurate, with Flagger's tutorial gates only (success rate >= 99 %, p99 <= 500 ms) and with the accuracy
# gate added:

# %% tags=["id-pitfall-quality"]
from labkit.sim.canary import canary_manifest, run_many

http_only = run_many(200, 1, canary_manifest(), failure="quality")
with_gate = run_many(200, 1, canary_manifest(min_accuracy=87.5, min_samples=20, threshold=8), failure="quality")
print(f"HTTP gates only : rolled back {http_only.rollback_rate:.0%}, median requests on the worse model "
      f"{np.median(http_only.exposed_requests()):,.0f}")
print(f"+ accuracy gate : rolled back {with_gate.rollback_rate:.0%}, median requests on the worse model "
      f"{np.median(with_gate.exposed_requests()):,.0f}")

# %% tags=["id-pitfall-quality-check"]
assert http_only.rollback_rate == 0.0 and with_gate.rollback_rate > 0.5
print("✓ HTTP metrics never catch a quality drop; the accuracy gate does")

# %% [markdown] tags=["id-pitfall-retries-intro"]
# ### 6d. Retries hide a bad canary
#
# `data/manifests/lab10-retries.yaml`: a `scorer` whose canary v2 answers 503 to 30 % of its requests,
# 50 % of the traffic on it, and `retries: {attempts: 3, retryOn: 5xx}` in the VirtualService. Retries
# make the **caller** see success; the **canary's own sidecar** counts every failed attempt. Flagger's
# `request-success-rate` reads `reporter="destination"` for exactly this reason
# (`labkit.mesh.canary.success_rates` reads both sides from the live sidecars).

# %% tags=["nbval-ignore-output", "id-pitfall-retries"]
from labkit import load
from labkit.mesh.canary import success_rates

cluster.apply(MANIFESTS / "lab10-retries.yaml")
caller = load.run("http://scorer/", requests=300, concurrency=4, proxy=sleep.outbound_url)
canary_rates = success_rates([sleep, plane.sidecar("scorer-v2")], "scorer-v2")
tries, failed_tries = canary_rates.destination.requests, canary_rates.destination.errors
print(f"the caller got: {caller.status_counts}, success {caller.success_rate:.1%}")
for side, rate in (("source", canary_rates.source), ("destination", canary_rates.destination)):
    print(f"canary scorer-v2, reporter={side:<11}: {rate.errors:>3} of {rate.requests:>3} answers 5xx, "
          f"request-success-rate {rate.percent:.1f} %")

# %% tags=["id-pitfall-retries-check"]
assert caller.success_rate >= 0.97 and failed_tries / tries > 0.15
assert canary_rates.source.percent > canary_rates.destination.percent
print("✓ the caller saw (almost) only 200s; the destination side saw the canary fail")

# %% [markdown] tags=["id-dashboard-intro"]
# ## 7. Explore: a thousand rollouts in seconds
#
# The dashboard runs the simulator: choose the Canary's analysis settings, the traffic level and how
# the new version is worse (more 5xx, slower, less accurate, or failing only for one user segment). It
# shows one seeded rollout step by step (weight, what Flagger read, failed checks) and a batch of
# seeded rollouts: how often the new version is rolled back and how much traffic reached it. Try: the
# `quality` fault with `min accuracy` 0 then 86; a 2 req/s service; stepWeight 5 vs 25.

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.canary import canary_dashboard

dash = canary_dashboard(batch=100)
dash.widget

# %% tags=["id-dashboard-check"]
dash.set(failure="quality", min_accuracy=0.0)
missed = dash.batch.rollback_rate
dash.set(min_accuracy=86.0)
assert missed == 0.0 and dash.batch.rollback_rate > missed
dash.set(failure="errors", min_accuracy=0.0)
print("✓ the dashboard's batch follows the gates: the accuracy gate catches the quality fault")

# %% [markdown] tags=["id-ex-intro"]
# ## Exercises
#
# ### Exercise 1 — gates that catch a worse model and spare a good one
#
# A service gets 40 requests/s; half of the predictions get their true label back, about 10 s later.
# The primary is 90 % accurate. Choose the accuracy gate and the step (interval 1m, maxWeight 50) so
# that, over 200 seeded simulated rollouts each:
#
# * a new model **5 points worse** is rolled back in at least 95 % of them, and in 95 % of them at most
#   5,000 user requests reach it;
# * an **equally good** model is rolled back in at most 2 % of them (noise must not kill it).
#
# Set `gates = {"min_accuracy": ..., "min_samples": ..., "threshold": ..., "step_weight": ...}`: the
# gate's bound in percent, the labelled rows it needs per version, the failed checks Flagger tolerates,
# and the weight per step in percent.
#
# Trade-offs: a low `min_samples` judges on noise; a high one keeps the gate answering 412 (a failed
# check) until enough labels come; `threshold` is how many failed checks Flagger tolerates. The check
# runs the simulator (a few seconds).

# %% tags=["id-ex1"]
### BEGIN SOLUTION
gates = {"min_accuracy": 87.5, "min_samples": 250, "threshold": 6, "step_weight": 10}
### END SOLUTION

# %% tags=["check", "points-3", "id-ex1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab10 import check_gates

check_gates(answer("gates"))

# %% [markdown] tags=["id-ex2-intro"]
# ### Exercise 2 — how many labels does an A/B test need?
#
# Write `needed(p_a, p_b, alpha, power)`: the labelled predictions **per arm** a two-sided
# two-proportion test at significance `alpha` needs to detect accuracies `p_a` vs `p_b` with probability
# `power`:
#
# n = ( z<sub>1-α/2</sub> √(2 p̄ (1-p̄)) + z<sub>power</sub> √(p<sub>a</sub>(1-p<sub>a</sub>) + p<sub>b</sub>(1-p<sub>b</sub>)) )² / (p<sub>a</sub> - p<sub>b</sub>)², &nbsp; p̄ = (p<sub>a</sub> + p<sub>b</sub>)/2, rounded up.
#
# (`scipy.stats.norm.isf(q)` is the z with q above it.)

# %% tags=["id-ex2"]
### BEGIN SOLUTION
import math

from scipy.stats import norm


def needed(p_a, p_b, alpha=0.05, power=0.8):
    mean = (p_a + p_b) / 2
    spread = (norm.isf(alpha / 2) * math.sqrt(2 * mean * (1 - mean))
              + norm.isf(1 - power) * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b)))
    return math.ceil(spread ** 2 / (p_a - p_b) ** 2)
### END SOLUTION


# %% tags=["check", "points-2", "id-ex2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab10 import check_sample_size

check_sample_size(answer("needed"))

# %% [markdown] tags=["id-ex3-intro"]
# ### Exercise 3 — decide three A/B tests
#
# Three teams ran A/B tests (A is the current model). For each, decide `"ship B"`, `"keep A"` or
# `"keep testing"` (no significant difference at α = 0.05, two-sided).

# %% tags=["id-ex3-givens"]
from labkit.grading.lab10 import AB_CASES

for name, (ca, na, cb, nb) in AB_CASES.items():
    print(f"{name}: A {ca:,}/{na:,} = {ca / na:.2%}   B {cb:,}/{nb:,} = {cb / nb:.2%}")

# %% tags=["id-ex3"]
### BEGIN SOLUTION
decisions = {}
for name, counts in AB_CASES.items():
    result = two_proportion_z_test(*counts)
    decisions[name] = ("ship B" if result.difference > 0 else "keep A") if result.significant(0.05) else "keep testing"
### END SOLUTION

# %% tags=["check", "points-2", "id-ex3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab10 import check_ab_decisions

check_ab_decisions(answer("decisions"))

# %% [markdown] tags=["id-cluster-real"]
# ## On a real cluster
#
# Install Istio (with its Prometheus add-on), then Flagger for Istio, pinned (Flagger's install guide,
# docs.flagger.app/install/flagger-install-on-kubernetes; the CRD labkit validates against is v1.44.0's):
#
# ```bash
# helm repo add flagger https://flagger.app
# kubectl apply -f https://raw.githubusercontent.com/fluxcd/flagger/v1.44.0/artifacts/flagger/crd.yaml
# helm upgrade -i flagger flagger/flagger --version 1.44.0 \
#   --namespace=istio-system \
#   --set crd.create=false \
#   --set meshProvider=istio \
#   --set metricsServer=http://prometheus:9090
# # or with kustomize:  kubectl apply -k "github.com/fluxcd/flagger//kustomize/istio?ref=v1.44.0"
# ```
#
# (`tools/real-cluster.sh` does this too, with Knative, KServe and Istio's Prometheus, at pinned versions.)
# The Canary is the same YAML (`tests/test_canary_lab.py` validates it against Flagger's CRD). The cell
# below exports everything this lab's cluster holds, with `cluster.export("exported/lab10")`; the notes
# after it say what to change before applying it. What differs from the laptop:
#
# * the model Deployment runs a model-server image (KServe's `kserve-sklearnserver`) instead of a local
#   process, and the model monitor is your own service (labkit's is `labkit/model-monitor`) fed by
#   KServe's payload logger (`spec.predictor.logger.url`);
# * intervals are minutes (`interval: 1m`), and Flagger's own load tester usually adds traffic, because
#   an idle canary has no metrics ("no values found" is a failed check);
# * Flagger reads `request-success-rate` from Prometheus; accuracy can be a **MetricTemplate** over the
#   monitor's `model_feedback_total` counter (`data/manifests/flagger-model-accuracy.yaml`) instead of
#   the webhook;
# * labels arrive hours or days later in production, so an accuracy gate needs long intervals, many
#   requests, or a proxy metric (agreement with the old model, confidence) during the rollout.

# %% tags=["nbval-ignore-output", "id-export"]
EXPORTED = Path("exported/lab10")
cluster.export(EXPORTED)
print((EXPORTED / "README.txt").read_text())  # names this machine's model folders: output not compared

# %% tags=["id-export-canary"]
print((EXPORTED / "08-canary-prod-digits.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# The export leaves out what Flagger makes itself from the Canary (`digits-primary` and the `prod`
# Services, DestinationRules and VirtualService: labkit's Flagger, like the real one, marks them as
# owned by the Canary, and `README.txt` lists them under "Not written"). One thing is left to do by
# hand: the model Deployments run labkit's model server on model folders of this machine
# (`README.txt` says so for each); on a cluster a model is served by an InferenceService (lab 08) or
# by `kserve-sklearnserver` with the model copied into the pod. Build labkit's own programs as step 1
# of `README.txt` says, then, from the repository root, apply (`SKIP_INSTALL=1 STEPS_DONE=1
# tools/real-cluster.sh exported/lab10` applies and checks) and watch Flagger take the canary
# through its analysis as the timeline above did:
#
# ```bash
# kubectl apply -f exported/lab10/
# kubectl get canaries --all-namespaces -w                     # Initialized, Progressing (weight 25, 50), Succeeded
# kubectl describe canary -n prod digits                       # the events: each step, each failed check
# kubectl -n istio-system logs deploy/flagger -f | jq .msg     # Flagger's own account
# kubectl edit deployment -n prod digits                       # a new model in the template: the next analysis
# ```

# %% [markdown] tags=["id-summary"]
# ## Summary
#
# *How is Istio's weighted routing used for canary deployments and A/B tests of new model versions in
# Knative or KServe, what do retries and circuit breaking add, and what does it cost?* From your run:

# %% tags=["nbval-ignore-output", "id-summary-numbers"]
print("- One 90/10 split, three ways: " + ", ".join(f"{w} {s:.0%}" for w, s in canary_share.items())
      + f" of {N_SPLIT} real requests reached the new version; each way is weights chosen per request.")
print(f"- Flagger moved v2 (held-out {offline['v2']:.1%}) through {', '.join(str(w) + '%' for _, p, w in promoted_watch if w)} "
      f"and promoted it; it rolled v3 (held-out {offline['v3']:.1%}) back {rollback_t - first_fail_t:.1f} s after its first "
      f"failed check, on accuracy alone: its success-rate check never failed.")
print(f"- A/B with sticky users: {len(ab.by_user)} users, none switched; v2 - v1 = {z_test.difference:+.2%} "
      f"(p = {z_test.p_value:.2g}, {needed_per_arm:,} labels per arm needed) -> {decision}.")
print(f"- Shadow: v3 scored {shadow_rows['v3']['accuracy']:.1%} on the mirrored requests while users only met v1.")
print(f"- Pitfalls: {misrouted.served['HTTP 503']} of 200 requests got 503 UH from a subset with no pods; "
      f"retries turned a canary with {failed_tries / tries:.0%} failed tries into {caller.success_rate:.1%} "
      f"success for the caller; a pooled accuracy of {pooled:.1%} hid v3's {shadow_rows['v3']['accuracy']:.1%}.")

# %% [markdown] tags=["id-summary-end"]
# **Weighted routing** is the mechanism: a VirtualService (or Knative's traffic block, or KServe's one
# field) shifts a share of requests to the new version, per request, and shifts it back in one apply.
# **Automation** (Flagger) turns it into a safe rollout: small steps, a check every interval, rollback
# after `threshold` failures — and for models, the check must include **quality on labelled feedback**,
# because a worse model still answers 200 quickly. **Retries** keep users' requests succeeding during a
# bad canary (and circuit breaking stops a failing version from being overloaded, lab 04) — but they hide
# the failure from the caller's metrics, so the gate must read the destination side. The **costs** are
# the ones you hit: more objects and labels to keep consistent (a missing subset is a 503, a missing
# version label mixes the metrics), gates that need enough traffic and labels to decide (exercise 1),
# and A/B tests that need thousands of labels (exercise 2).
#
# labkit simplifies: each version is one pod, labels come back within a second, the rows are drawn from
# one held-out set, and Flagger's metrics are computed from the sidecars' counters without Prometheus.

# %% tags=["id-teardown"]
cluster.close()
