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
# # Lab 07 — Knative on Kubernetes: what a Service becomes, revisions, traffic
#
# **What you will learn** (about 60–75 minutes)
#
# 1. Name the Kubernetes and Knative objects one Knative `Service` turns into, and what each does.
# 2. See that every change of the template makes a new, immutable **revision**, numbered in order.
# 3. Split traffic between revisions by percent, and test a revision on its own **tag** URL while
#    it takes 0 % of the main traffic.
# 4. Edit a manifest and watch the new revision appear and take over the traffic.
# 5. Drag a traffic block around in a dashboard and see the Route, the Revisions' routing state and
#    the measured split follow.

# %% [markdown] tags=["id-idea"]
# ## The idea: a Service is a bundle of Kubernetes primitives
#
# You write one object, a Knative `Service`. Knative's controllers write the rest: a
# **Configuration** (your `spec.template`) that stamps out one **Revision** per template change,
# a **Route** (your `spec.traffic`) that the networking layer turns into an **Ingress**, and for
# each revision a plain Kubernetes **Deployment** whose pods run your container next to a
# **queue-proxy** sidecar, a **PodAutoscaler** (the KPA) and a **ServerlessService** that
# switches the revision's address between its pods and the **activator**.
#
# ```mermaid
# flowchart LR
#     KS[Service hello] --> C[Configuration hello]
#     KS --> R[Route hello]
#     C --> REV1[Revision hello-00001]
#     C --> REV2[Revision hello-00002]
#     REV1 --> D1[Deployment hello-00001-deployment<br/>user-container + queue-proxy]
#     REV1 --> PA1[PodAutoscaler hello-00001]
#     PA1 --> SKS1[ServerlessService hello-00001]
#     SKS1 --> PRIV[Service hello-00001-private<br/>selects the pods]
#     SKS1 --> PUB[Service hello-00001<br/>pods or activator]
#     R --> ING[KIngress hello<br/>hosts, % splits, ingress class]
#     ING --> PUB
# ```
#
# labkit runs this on your laptop: the same YAML, real processes for the pods, a real
# queue-proxy in front of each, the KPA deciding every 2 seconds and an activator holding requests
# while a revision scales from zero.

# %% [markdown] tags=["id-expand-intro"]
# ## What one Service becomes
#
# `data/manifests/knative-hello.yaml` is Knative's own hello-world sample. `expand()` lists the
# objects Knative's reconcilers would create for it in a cluster, with the names, labels and
# owner references they give them.

# %% tags=["id-expand"]
from pathlib import Path

import labkit
from labkit.manifests import load_file
from labkit.serving.expand import expand, expand_yaml, object_names

DATA = Path(labkit.__file__).resolve().parents[1] / "data" / "manifests"
print((DATA / "knative-hello.yaml").read_text())
[hello] = load_file(DATA / "knative-hello.yaml")
objects = expand(hello)
for kind, name in object_names(objects):
    print(f"{kind:<18} {name}")

# %% tags=["id-expand-check"]
assert ("Deployment", "hello-00001-deployment") in object_names(objects)
assert ("Service", "hello-00001-private") in object_names(objects)
print("✓ one Service became", len(objects), "objects")

# %% [markdown] tags=["id-deployment-intro"]
# The revision's Deployment is ordinary Kubernetes. Look at its pod template: two containers.
# Yours is renamed `user-container` and gets `PORT`; the `queue-proxy` sidecar listens on 8012
# (requests), 8022 (admin, drain), 9090 (metrics the autoscaler scrapes) and 9091 (your metrics),
# and is told your `containerConcurrency` and timeout. The owner reference makes the Deployment
# belong to the Revision, so deleting the revision deletes it.

# %% tags=["id-deployment"]
print(expand_yaml(hello).split("---\n")[2])

# %% [markdown] tags=["id-public-private"]
# Two Kubernetes Services per revision: `hello-00001-private` selects the pods (its endpoints are
# the ready pods); `hello-00001` has **no selector** — the ServerlessService writes its endpoints
# itself: the pods in **Serve** mode, or the activator in **Proxy** mode (no pod ready, or too
# little spare capacity for a burst). That is how Knative puts the activator in and out of the
# path without touching the Ingress.

# %% [markdown] tags=["id-kingress-intro"]
# ### The networking layer: Knative's Ingress, not Kubernetes' Ingress
#
# Kubernetes has its own `Ingress` (`networking.k8s.io/v1`): host and path rules, each sending
# everything to **one** backend Service. That is not enough for Knative: a route splits traffic
# between revisions by percent, tells the activator which revision a request is for, and needs
# per-tag hosts. So the Route reconciler writes a **KIngress** instead
# (`networking.internal.knative.dev/v1alpha1`, kind `Ingress`): one rule per set of host names
# (the cluster-local names `hello.default`, `hello.default.svc`, ... with visibility
# `ClusterLocal`, and the external `hello.default.<domain>` with `ExternalIP`), each with
# weighted **splits** to the revisions' public Services, and each split **appends the headers**
# `Knative-Serving-Revision` and `Knative-Serving-Namespace`.
#
# Knative does not route the traffic itself. The KIngress's annotation
# `networking.knative.dev/ingress.class` names the **networking plugin** that turns it into a real
# proxy's configuration: `istio.ingress.networking.knative.dev` (net-istio: an Istio Gateway and
# VirtualServices; the default of the `ingress-class` key in the `config-network` ConfigMap),
# `kourier.ingress.networking.knative.dev` (Kourier: Envoy configured directly) or
# `contour.ingress.networking.knative.dev` (Contour's HTTPProxy). A Service can pick its own with the
# same annotation.

# %% tags=["id-kingress"]

from labkit.serving.expand import INGRESS_CLASS

[kingress] = [o for o in objects if o["kind"] == "Ingress"]
print(kingress["apiVersion"], kingress["kind"], kingress["metadata"]["name"])
print("ingress class:", kingress["metadata"]["annotations"][INGRESS_CLASS])
for rule in kingress["spec"]["rules"]:
    split = rule["http"]["paths"][0]["splits"]
    print(f"{rule['visibility']:<13} {', '.join(rule['hosts'])}")
    for s in split:
        print(f"{'':<13} -> {s['serviceName']} {s['percent']} %  headers {s['appendHeaders']}")

# %% tags=["id-kingress-check"]
assert kingress["apiVersion"] == "networking.internal.knative.dev/v1alpha1"
assert {r["visibility"] for r in kingress["spec"]["rules"]} == {"ClusterLocal", "ExternalIP"}
print("✓ the Route became a KIngress for", kingress["metadata"]["annotations"][INGRESS_CLASS])

# %% [markdown] tags=["id-kingress-class-intro"]
# The same Service with `networking.knative.dev/ingress.class` set to Kourier: only the annotation
# changes. The KIngress is the contract; which proxy implements it is an installation choice.

# %% tags=["id-kingress-class"]
kourier = hello.model_copy(deep=True)
kourier.metadata.annotations[INGRESS_CLASS] = "kourier.ingress.networking.knative.dev"
[kourier_ingress] = [o for o in expand(kourier) if o["kind"] == "Ingress"]
print(kourier_ingress["metadata"]["annotations"])

# %% [markdown] tags=["id-live-intro"]
# ## Run it for real: revisions
#
# `LocalCluster` applies the same file. `knative_service()` gives the live side: revisions,
# replicas, status. Every response carries `x-labkit-revision` (which revision answered; labkit
# adds it so you can watch a split) and `x-labkit-pod` (which process).
#
# The cluster lives until the cell near the end that closes it. Its route URLs use Knative's **default
# domain**: since knative-v1.11 that is `svc.cluster.local` (routes reachable inside the cluster only)
# until an operator sets a real one in the `config-domain` ConfigMap (Knative's
# `pkg/reconciler/route/config/domain.go`); older releases defaulted to `example.com`, and KServe's
# quick-install script still configures `example.com` (labs 08 and 09 use it). We set the cluster's
# `config-domain` to Knative's default here and print what it is.

# %% tags=["nbval-ignore-output", "id-live-start"]
import urllib.request

from labkit.cluster import LocalCluster
from labkit.serving.service import knative_service


def call(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["x-labkit-revision"], response.read().decode().strip()

from labkit.serving.service import configure_serving

cluster = LocalCluster()
DOMAIN = configure_serving(cluster, domain="svc.cluster.local").domain  # Knative >= 1.11's default
print("config-domain:", DOMAIN)
cluster.apply(DATA / "knative-hello.yaml")
svc = knative_service(cluster, "hello")
print(cluster.status())

# %% tags=["id-live-first"]
print(call(svc.url))
print(list(svc.revisions))

# %% [markdown] tags=["id-status-intro"]
# The status is what `kubectl get ksvc hello -o yaml` shows under `status:` — the URL the route
# would have on a cluster, the latest created and latest ready revision, the resolved traffic and
# the three conditions.

# %% tags=["id-status"]
import yaml

print(yaml.safe_dump(svc.knative_status.model_dump(mode="json", by_alias=True, exclude_none=True),
                     sort_keys=False))

# %% [markdown] tags=["id-new-revision-intro"]
# ### A new template makes a new revision
#
# Change anything inside `spec.template` — here the environment variable `TARGET` — and apply
# again. Knative does not change the running revision: it creates `hello-00002` and, because the
# default traffic block is `latestRevision: true, percent: 100`, the route moves to it once it
# is ready. `hello-00001` still exists (and will scale to zero, as no route points at it).
# Changing only the traffic block makes no revision.

# %% tags=["id-new-revision"]
v2 = hello.model_copy(deep=True)
v2.spec.template.spec.containers[0].env[0].value = "revision two"
cluster.apply(v2)
print(list(svc.revisions))
print(call(svc.url))

# %% [markdown] tags=["id-split-intro"]
# ### Splitting traffic, and a tag at 0 %
#
# Pin 80 % on the first revision, send 20 % to the latest, and give the latest a tag: the tag
# gets its own URL that always reaches that revision: `http://candidate-hello.default.<domain>`
# (with the default domain, `candidate-hello.default.svc.cluster.local`). labkit gives each tag its own
# local port, and the main port also routes by that Host header, as the ingress does.

# %% tags=["nbval-ignore-output", "id-split"]
from collections import Counter

from labkit.serving.models import TrafficTarget

split = v2.model_copy(deep=True)  # the same template: no new revision
split.spec.traffic = [
    TrafficTarget(revision_name="hello-00001", percent=80),
    TrafficTarget(latest_revision=True, percent=20, tag="candidate"),
]
cluster.apply(split)
counts = Counter(call(svc.url)[0] for _ in range(200))
print(counts)
print("tag URL      ->", call(svc.tag_url("candidate"))[0])
print("Host header  ->", call(svc.url, host=f"candidate-hello.default.{DOMAIN}")[0])

# %% tags=["id-split-check"]
assert 0.1 < counts["hello-00002"] / 200 < 0.3, counts
assert call(svc.tag_url("candidate"))[0] == "hello-00002"
print("✓ about 20 % reached hello-00002, and its tag URL reaches it alone")
print([(t.revision_name, t.percent, t.tag, t.url) for t in svc.knative_status.traffic])

# %% [markdown] tags=["id-exercise-1"]
# ## Exercises
#
# ### Exercise 1 — predict the names (2 points)
#
# The Service `shop` (namespace `default`) has had its template changed once, so its newest
# revision is the second. Without running anything, fill in the names Knative gives the objects
# that belong to that newest revision, and to the Service.

# %% tags=["id-exercise-1-solution"]
from labkit.grading.lab07 import NAME_KEYS, check_object_names

print(NAME_KEYS)
### BEGIN SOLUTION
names = {
    "Configuration": "shop", "Route": "shop", "Ingress": "shop",
    "Revision": "shop-00002", "Deployment": "shop-00002-deployment",
    "PodAutoscaler": "shop-00002", "ServerlessService": "shop-00002",
    "private Service": "shop-00002-private", "public Service": "shop-00002",
}
### END SOLUTION

# %% tags=["check", "points-2", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab07 import check_object_names

check_object_names(answer("names"))

# %% [markdown] tags=["id-exercise-2"]
# ### Exercise 2 — write a traffic block (2 points)
#
# `shop` has two ready revisions, `shop-00001` and `shop-00002` (the latest). Write `traffic`, the
# `spec.traffic` list as Python dicts with Knative's camelCase keys: 90 % stays on `shop-00001`,
# 10 % **follows the latest revision** (so the next revision takes it over by itself), and the
# latest revision is also reachable on its own under the tag `candidate`.

# %% tags=["id-exercise-2-solution"]
from labkit.grading.lab07 import check_traffic_block

### BEGIN SOLUTION
traffic = [
    {"revisionName": "shop-00001", "percent": 90},
    {"latestRevision": True, "percent": 10, "tag": "candidate"},
]
### END SOLUTION

# %% tags=["check", "points-2", "id-exercise-2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab07 import check_traffic_block

check_traffic_block(answer("traffic"))

# %% [markdown] tags=["id-exercise-3"]
# ### Exercise 3 — edit a manifest, see a new revision (2 points)
#
# The next cell writes the manifest of our running `hello` Service (all traffic back to the latest
# revision) to a file. Edit the **text** so that `TARGET` is `students`, write it back, and apply
# the file with `cluster.apply(path)`. The check reads the file, the running Service's revisions and
# what its URL answers now — so only a change that reached the cluster passes.

# %% tags=["nbval-ignore-output", "id-exercise-3-file"]
import tempfile

from labkit.manifests import export

workdir = Path(tempfile.mkdtemp(prefix="lab07-"))
path = workdir / "hello.yaml"
back = v2.model_copy(deep=True)
path.write_text(export(back))
print(path.read_text())

# %% tags=["id-exercise-3-solution"]
from labkit.grading.lab07 import check_edited_revision

### BEGIN SOLUTION
path.write_text(path.read_text().replace("value: revision two", "value: students"))
cluster.apply(path)
### END SOLUTION
print(list(svc.revisions), call(svc.url)[1])

# %% tags=["check", "points-2", "id-exercise-3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab07 import check_edited_revision

check_edited_revision(answer("svc"), answer("path"))

# %% [markdown] tags=["id-live-export-intro"]
# ## What the running Service is now
#
# `expand()` with the live service lists every revision that exists, its current replica count,
# whether a route still points at it (`routingState`) and its ServerlessService mode.

# %% tags=["nbval-ignore-output", "id-live-expand"]
revision_names = list(svc.revisions)
for obj in expand(back, svc):
    if obj["kind"] in ("Revision", "ServerlessService"):
        labels = obj["metadata"]["labels"]
        print(obj["kind"], obj["metadata"]["name"], labels.get("serving.knative.dev/routingState", ""),
              obj["spec"].get("mode", ""))

# %% [markdown] tags=["id-gradual-intro"]
# ## Three Knative details that shape what you measure
#
# **Gradual rollout.** By default a new ready revision takes its route's `latestRevision` share at
# once. With `serving.knative.dev/rollout-duration` on the Service (or `rollout-duration` in the
# `config-network` ConfigMap) Knative's Route reconciler moves it in steps: the new revision gets
# **1 %** first; how long that first step took (at least 1 s) sets the pace, and the rest moves in
# equal steps over the duration (`pkg/reconciler/route/traffic/rollout.go`). The KIngress carries
# the state in its `networking.internal.knative.dev/rollout` annotation, and while it runs the
# Service's `RoutesReady` condition is `Unknown` with reason `RolloutInProgress`. The next cell applies a
# Service `gradual`, changes its template, and samples the route every second.

# %% tags=["nbval-ignore-output", "id-gradual"]
import time

from labkit.manifests import load_file
from labkit.serving.expand import ROLLOUT_ANNOTATION
from labkit.serving.rollout_duration import ROLLOUT_DURATION

[gradual] = load_file(DATA / "knative-hello.yaml")
gradual.metadata.name = "gradual"
gradual.metadata.annotations[ROLLOUT_DURATION] = "6s"
cluster.apply(gradual)
newer = gradual.model_copy(deep=True)
newer.spec.template.spec.containers[0].env[0].value = "gradually"
cluster.apply(newer)
rolling = knative_service(cluster, "gradual")
[ingress] = [o for o in expand(newer, rolling) if o["kind"] == "Ingress"]
print("KIngress rollout state:", ingress["metadata"]["annotations"][ROLLOUT_ANNOTATION])
routes = rolling.knative_status.condition("RoutesReady")
print("RoutesReady:", routes.status, routes.reason, "-", routes.message)
shares = []
for second in range(9):
    shares.append(dict(rolling.table.split))
    print(f"t={second}s", shares[-1])
    time.sleep(1)

# %% tags=["nbval-ignore-output", "id-gradual-check"]
assert shares[0] == {"gradual-00001": 99, "gradual-00002": 1}, shares[0]
assert shares[-1] == {"gradual-00002": 100}, shares[-1]
print("✓ 1 % first, then equal steps, then all of it:",
      " -> ".join(str(s.get("gradual-00002", 0)) for s in shares))

# %% [markdown] tags=["id-progress-deadline-intro"]
# **Progress deadline.** A revision whose pods never become ready is not waited for forever: after
# its progress deadline (the `serving.knative.dev/progress-deadline` annotation on the template, else
# `progress-deadline` in `config-deployment`, 600 s by default) Knative marks it failed with reason
# `ProgressDeadlineExceeded` and the message *Initial scale was never achieved*; 30 s later its
# PodAutoscaler stops trying. The route keeps sending traffic to the last ready revision. Here the
# container sleeps instead of listening on `$PORT`, with a 3 s deadline.

# %% tags=["nbval-ignore-output", "id-progress-deadline"]
import sys

from labkit.serving.progress_deadline import PROGRESS_DEADLINE

stuck = newer.model_copy(deep=True)
stuck.spec.template.metadata.annotations[PROGRESS_DEADLINE] = "3s"
stuck.spec.template.spec.containers[0].command = [sys.executable, "-c", "import time; time.sleep(600)"]
started = time.monotonic()
cluster.apply(stuck)
print(f"apply returned after {time.monotonic() - started:.1f} s")
for condition in rolling.revision("gradual-00003").knative_status.conditions:
    print(f"{condition.type:<19} {condition.status:<8} {condition.reason or ''} {condition.message or ''}")
print(rolling.knative_status.condition("ConfigurationsReady").message)
print("still answering:", call(rolling.url))

# %% tags=["id-progress-deadline-check"]
failed = {c.type: c for c in rolling.revision("gradual-00003").knative_status.conditions}
assert failed["ResourcesAvailable"].reason == "ProgressDeadlineExceeded"
assert rolling.knative_status.latest_ready_revision_name == "gradual-00002"
print("✓ gradual-00003 failed at its deadline; traffic stayed on gradual-00002")

# %% [markdown] tags=["id-gc-intro"]
# **Revision garbage collection.** Every template change leaves an old revision behind. Knative's
# `config-gc` ConfigMap decides when one is deleted: never while it is *active* (the latest ready
# one, one a route references, or one annotated `serving.knative.dev/no-gc: "true"`); otherwise
# once it is older than `retain-since-create-time` (48h) **and** unreferenced for longer than
# `retain-since-last-active-time` (15h), as long as `min-non-active-revisions` (20) remain; and
# never more than `max-non-active-revisions` (1000) (`pkg/reconciler/gc/v2/gc.go`). So on a default
# cluster, the old revisions you make in a day of experiments are all still there tomorrow. The next
# cell asks labkit's copy of that decision what would go now under the defaults, and under the
# "collect at once" settings from the ConfigMap's own examples.

# %% tags=["nbval-ignore-output", "id-gc"]
import time

from labkit.serving.gc import GCConfig, RevisionRecord, collect

records = [RevisionRecord(r.name, r.created, r.reachable, r.routing_changed,
                          r.template.metadata.annotations)
           for r in rolling.revisions.values()]
print("revisions:", [(r.name, "active" if r.routed else "reserve") for r in records])
defaults = GCConfig.from_configmap({})
at_once = GCConfig.from_configmap({
    "retain-since-create-time": "disabled", "retain-since-last-active-time": "disabled",
    "min-non-active-revisions": "0", "max-non-active-revisions": "0"})
print("defaults delete:", collect(defaults, records, rolling.latest_ready, time.monotonic()))
print("'at once' deletes:", collect(at_once, records, rolling.latest_ready, time.monotonic()))

# %% tags=["id-gc-check"]
assert collect(defaults, records, rolling.latest_ready, time.monotonic()) == []
assert "gradual-00001" in collect(at_once, records, rolling.latest_ready, time.monotonic())
cluster.delete("serving.knative.dev/v1/Service", "gradual")
print("✓ defaults keep every revision for now; 'gradual' deleted")

# %% [markdown] tags=["id-revisions-sim-intro"]
# **The same three rules over hours.** The cells above watched seconds; these rules matter over a
# day of deploys. `simulate_revisions` calls the functions the live controller calls (the rollout's
# step, the GC decision, the deadline) on a simulated clock: a Service deployed four times, the
# third revision never starting, a 380 s rollout, and a `config-gc` that deletes a reserve
# revision 1 h after it was created and 30 min after it last had traffic. Knative runs GC when a
# revision or route changes and on a resync every 10 hours, so a revision that goes stale in
# between waits for the next of those (`pkg/reconciler/gc/controller.go`).

# %% tags=["id-revisions-sim"]
from labkit.sim import Deploy, Poisson, simulate_revisions

HOUR = 3600
day = simulate_revisions(
    [Deploy(0), Deploy(1 * HOUR), Deploy(2 * HOUR, startup=None), Deploy(4 * HOUR)],
    horizon=12 * HOUR, rollout_duration=380, workload=Poisson(5.0),
    gc={"retain-since-create-time": "1h", "retain-since-last-active-time": "30m",
        "min-non-active-revisions": "0"})
print(day)

# %% tags=["id-revisions-sim-check"]
assert day.failed == [(2 * HOUR + 600, "web-00003")]  # the 600 s default deadline
assert [name for _, name in day.deleted] == ["web-00001", "web-00003", "web-00002"]
assert day.remaining == ["web-00004"]
print("✓ one failure at its deadline, three revisions collected, the last two only at the resync")

# %% [markdown] tags=["id-dashboard-intro"]
# ## Explore: a traffic block, its Route and the split
#
# Three revisions of `hello` exist here, as above. The dashboard writes the `spec.traffic` block from
# its controls — a percent and a tag for each revision, the third entry either following
# `latestRevision` or pinned by name — validates the whole Service with labkit's manifest loader
# (a block Knative would refuse shows its error), expands it with the same code as `expand()` above,
# and sends simulated requests through the route's weighted pick (`RouteTable.pick`, the pick the live
# router made for your 200 requests). Try: a block that sums to 110; the same tag twice; 0 % with a
# tag (the revision stays `active`, reachable on its tag URL); 0 % without one (`reserve`, so Knative
# scales it to zero); 100 simulated requests against 10,000.

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.traffic_split import traffic_dashboard

traffic = traffic_dashboard(domain=DOMAIN)
traffic

# %% tags=["nbval-ignore-output", "id-dashboard-check"]
assert traffic.error is None and dict(traffic.result.table.split) == {"hello-00001": 80, "hello-00003": 20}
assert traffic.result.routing_state()["hello-00002"] == "reserve"
traffic.set(percent_1=50, percent_2=50, percent_3=0)  # what dragging the sliders runs
assert traffic.result.routing_state()["hello-00002"] == "active"
assert abs(traffic.result.measured()["hello-00002"] - 0.5) < 0.06
traffic.set(percent_1=80, percent_2=0, percent_3=20)
print("✓ the Route and the revisions' routing state follow the traffic block")

# %% tags=["id-close"]
from labkit.net import process_alive

pids = [pod.pid for rev in svc.revisions.values() for pod in rev.pods]
EXPORTED = Path("exported/lab07")  # for "On a real cluster" below
cluster.export(EXPORTED)
cluster.close()
assert not any(process_alive(pid) for pid in pids)
print("✓ cluster closed: no replica process left")

# %% [markdown] tags=["id-real-cluster"]
# ## On a real cluster
#
# Before it closed, the cluster was exported with `cluster.export("exported/lab07")`: the `hello`
# Service as it stood at the end (your edited template, all traffic to the latest revision),
# ready for `kubectl apply` on a cluster with Knative Serving (the official CRDs accept it;
# labkit's tests check that):

# %% tags=["id-real-cluster-export"]
print((EXPORTED / "README.txt").read_text())
print((EXPORTED / "03-service-default-hello.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# In a terminal in this folder (`labs/`): `../tools/real-cluster.sh exported/lab07` installs Knative
# (with Istio as its ingress) at pinned versions, applies the folder and checks that the Service
# answers 200 through the ingress gateway. By hand, replaying the lab's revisions:
#
# ```bash
# kubectl apply -f ../data/manifests/knative-hello.yaml     # hello-00001
# kubectl apply -f exported/lab07/                          # a new template: hello-00002
# kubectl get ksvc,configuration,revision,route             # what expand() listed
# kubectl get deploy,svc,podautoscaler,sks
# kubectl get kingress hello -o yaml                        # the KIngress: rules, splits, ingress class
# kubectl get cm config-network -n knative-serving -o yaml  # ingress-class, rollout-duration
# kubectl get cm config-gc -n knative-serving -o yaml       # when old revisions are deleted
# kubectl annotate revision hello-00001 serving.knative.dev/no-gc=true   # keep this one forever
# kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80 &
# URL=$(kubectl get ksvc hello -o jsonpath='{.status.url}')
# curl -H "Host: ${URL#*://}" http://127.0.0.1:8080/          # Hello students!
# ```
#
# A `traffic:` block naming `hello-00001` applies only once that revision exists, which is why the
# lab's 80/20 split came after the first template; on a cluster you can name revisions yourself
# (`spec.template.metadata.name: hello-v1`) so that such a manifest does not depend on the order.
#
# What differs from the laptop:
#
# - **Pods, not processes.** A revision's pods are scheduled on nodes and pull an image; a cold
#   start is seconds, not the tenth of a second you saw here.
# - **The ingress is a real proxy** (Istio, Kourier or Contour) implementing the Knative
#   `Ingress`; for routes outside the cluster an operator sets a domain in `config-domain` (the
#   default, `svc.cluster.local`, keeps them cluster-local) and points DNS at the ingress. labkit
#   uses local ports instead and also routes by Host header, as the ingress does.
# - **The activator is replicated.** Knative runs one activator Deployment for all services (labkit,
#   too, runs one activator for the whole cluster, routing by the `Knative-Serving-Revision` header),
#   but with several pods, and each revision's throttler gets a share of its capacity.
# - **Status fields and UIDs** come from the API server; labkit derives stable UIDs from names.

# %% [markdown] tags=["id-summary"]
# ## Summary
#
# *How does Knative build a serverless experience from Kubernetes primitives?* One `Service`
# becomes a Configuration, a Route and, per template change, an immutable Revision; each revision
# is an ordinary Deployment (your container plus the queue-proxy), a PodAutoscaler and a
# ServerlessService with a private and a public Kubernetes Service; the Route becomes a KIngress
# (Knative's networking layer, which an ingress plugin such as net-istio turns into its proxy's
# configuration) that splits traffic by percent between revisions' public Services and gives each
# tag its own host. From your run:

# %% tags=["nbval-ignore-output", "id-summary-numbers"]
print(f"- One Service became {len(objects)} objects: {', '.join(sorted({k for k, _ in object_names(objects)}))}.")
print(f"- Editing the template made revisions {', '.join(revision_names)}; changing only the traffic made none.")
print(f"- The 80/20 split sent {counts['hello-00002']} of 200 live requests ({counts['hello-00002'] / 2:.0f} %) "
      f"to hello-00002; the tag URL reached it alone, and Host candidate-hello.default.{DOMAIN} did too.")
print(f"- The dashboard's last block measured {traffic.result.measured()['hello-00001']:.1%} on hello-00001 "
      f"for {dict(traffic.result.table.split).get('hello-00001', 0)} % wanted, over "
      f"{traffic.result.requests:,} simulated requests.")

# %% [markdown] tags=["id-summary-end"]
# Lab 05 looks inside the PodAutoscaler: how it decides how many pods a revision gets.
