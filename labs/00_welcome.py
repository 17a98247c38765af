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
# # Lab 00 — Welcome to labkit
#
# labkit teaches serverless computing, service meshes and ML serving on your laptop, with no
# Kubernetes cluster: it runs small, faithful equivalents of Knative, Istio/Envoy and KServe as
# real processes talking real HTTP on `127.0.0.1`, configured with the same YAML you would give a
# real cluster.
#
# **What you will learn** (about 15 minutes)
#
# 1. Check that your environment has everything the labs need.
# 2. Start a live component from a Kubernetes manifest and send it requests.
# 3. Drive a widget: move a control, see a model answer.
# 4. Do an exercise and read the hint a `check_...()` gives when an answer is wrong.

# %% [markdown] tags=["id-idea"]
# ## How a lab works
#
# Every lab has the same shape: the idea (short, with a diagram), **run it for real** with live
# components, **explore** with a widget over a simulation or the live system, **exercises** whose
# answers a `check_...()` call verifies, what changes **on a real cluster**, and a **summary**
# that answers the lab's question with the numbers you measured.
#
# ```mermaid
# flowchart LR
#     NB[this notebook] -->|apply YAML| LC[LocalCluster]
#     LC -->|starts| P1[replica process<br/>127.0.0.1:port]
#     LC -->|starts| P2[replica process<br/>127.0.0.1:port]
#     NB -->|HTTP| LC
#     NB -->|parameters| SIM[simulator<br/>labkit.sim]
#     W[widget controls] --> SIM
#     NB -->|your answer| CK[check_...&#40;&#41;<br/>✓ or a HINT]
# ```
#
# Live components show what really happens on one machine; the simulator shows what happens
# over a month of traffic in a second. The same policy code drives both.

# %% [markdown] tags=["id-env-intro"]
# ## 1. Your environment
#
# labkit declares the packages it needs (with the oldest versions it was tested with) in its
# package metadata. The next cell lists what you have; the one after checks it.

# %% tags=["nbval-ignore-output", "id-env-versions"]
import platform
import sys
from importlib.metadata import requires, version

from packaging.requirements import Requirement

import labkit

required = [Requirement(r) for r in requires("labkit") if "extra ==" not in r]
print(f"Python {platform.python_version()}, labkit {labkit.__version__}")
for req in required:
    print(f"  {req.name:<18} {version(req.name):<10} needs {req.specifier}")

# %% tags=["id-env-check"]
too_old = [req.name for req in required if not req.specifier.contains(version(req.name), prereleases=True)]
assert sys.version_info >= (3, 10), "labkit needs Python 3.10 or newer"
assert not too_old, f"too old: {too_old}; run `make lab` again to upgrade"
print("✓ Python >= 3.10, and every package labkit needs is installed and new enough")

# %% [markdown] tags=["id-live-intro"]
# ## 2. A live component
#
# Here is a Kubernetes manifest: a `Deployment` that runs two replicas of a tiny "hello" app, and
# a `Service` that spreads requests over them. It is ordinary Kubernetes YAML; `kubectl apply`
# would accept it.

# %% tags=["nbval-ignore-output", "id-show-manifest"]
from pathlib import Path

DATA = Path(labkit.__file__).resolve().parents[1] / "data"  # the data/ folder next to the labkit package
HELLO = DATA / "manifests" / "hello.yaml"
print(HELLO.read_text())

# %% [markdown] tags=["id-live-run-intro"]
# `LocalCluster` plays the Kubernetes API server and controllers: `apply()` reads the manifest
# and starts each replica as a real process on a free port of `127.0.0.1`; the Service becomes a
# small load balancer in front of them. Leaving the `with` block stops everything it started.
# Each answer carries the process id of the replica that sent it, so you can see the Service
# taking turns. (Ports and process ids change on every run.)

# %% tags=["nbval-ignore-output", "id-live-run"]
import httpx

from labkit.cluster import LocalCluster

with LocalCluster() as cluster:
    cluster.apply(HELLO)
    print(cluster.status())
    replica_pids = [pod.replica.pid for pod in cluster.pods_of({"app": "hello"})]
    service = cluster.url("Service", "hello")
    answers = [httpx.get(service) for _ in range(4)]
for reply in answers:
    print(reply.status_code, reply.text.strip(), "from pid", reply.headers["x-labkit-pod"])

# %% tags=["id-live-check"]
from labkit.net import process_alive

answered_by = {int(a.headers["x-labkit-pod"]) for a in answers}
assert [a.text.strip() for a in answers] == ["Hello labkit!"] * 4
assert answered_by == set(replica_pids), "both replicas should have answered (round robin)"
assert not any(process_alive(pid) for pid in replica_pids), "the replicas should be gone after the with block"
print(f"✓ {len(answers)} answers from {len(answered_by)} replicas; after the with block no replica is left")

# %% [markdown] tags=["id-widgets-intro"]
# ## 3. A widget
#
# Widgets put controls on a model. This dashboard draws one minute of requests arriving at random
# (a Poisson process, `labkit.sim.Poisson`) at the rate you pick. Move the slider: the model reruns
# when you let go. Randomness is seeded, so the same rate always draws the same minute. Every lab's
# dashboard works this way; this one is 50 lines you can read in `labkit/widgets/arrivals.py`
# (a `compute` that runs the model, a summary table and a figure).

# %% tags=["nbval-ignore-output", "id-widget"]
from labkit.widgets.arrivals import arrivals_dashboard

demo = arrivals_dashboard(rate=0.5)
demo

# %% [markdown] tags=["id-widget-drive-intro"]
# A notebook cell can move the slider too, exactly as your mouse does (`demo.controls` are the
# controls by name); the dashboard keeps the model's latest answer, the arrival times, in `demo.result`.

# %% tags=["nbval-ignore-output", "id-widget-drive"]
slow = len(demo.result)
demo.controls["rate"].value = 4.0
assert len(demo.result) > slow, "more requests per second should draw more requests"

# %% tags=["id-widget-state"]
print(f"at 0.5 req/s the minute had {slow} requests; at {demo.controls['rate'].value} req/s it had {len(demo.result)}")

# %% [markdown] tags=["id-exercises-intro"]
# ## 4. Exercises and checks
#
# An exercise is a code cell you complete (in your copy it raises `NotImplementedError` with a
# message saying what to write), followed by a cell that calls a `check_...()` function on
# `answer("name")`, which reads your variable (run the check first and it says so). The check
# recomputes the answer with labkit's own functions. A right answer prints a `✓` line. A wrong one raises an
# `AssertionError` that says what is off and gives a **HINT**, never the answer. Graders run every
# notebook with `pytest --nbval`, so a failing check is a lost point.
#
# This is what a wrong answer looks like (the service time was typed in milliseconds):

# %% tags=["id-wrong-answer-demo"]
from labkit.grading.lab00 import check_busy_instances

try:
    check_busy_instances(5.0 * 200, arrival_rate=5.0, service_time=0.2)
except AssertionError as wrong:
    print(wrong)

# %% [markdown] tags=["id-exercise-1"]
# ### Exercise 1 — how many instances are busy? (1 point)
#
# A function receives on average 5 requests per second, and each request keeps an instance busy
# for 200 ms. On average, how many instances are busy at the same time? Store the number in
# `busy_instances`.
#
# *Little's law* says: the average number of requests inside a system equals the rate at which
# they arrive times how long each one stays, $L = \lambda W$. You will meet this number again in
# lab 01 as the simulator's `avg_running_count`.

# %% tags=["id-exercise-1-solution"]
arrival_rate = 5.0  # requests per second
service_time = 0.200  # seconds each request is served
### BEGIN SOLUTION
busy_instances = arrival_rate * service_time
### END SOLUTION

# %% tags=["check", "points-1", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab00 import check_busy_instances

check_busy_instances(answer("busy_instances"), arrival_rate=5.0, service_time=0.2)

# %% [markdown] tags=["id-real-cluster"]
# ## 5. On a real cluster
#
# `data/manifests/hello.yaml` is plain Kubernetes. `labkit export` (or `cluster.export(DIR)` for
# everything a running `LocalCluster` holds) writes it for a real cluster: one file per object,
# numbered in the order `kubectl apply` needs them, the built-in image `labkit/hello` replaced by
# the public image it stands for, and a `README.txt` saying what to run and what was changed.

# %% tags=["id-real-cluster-export"]
from labkit.export import export_objects, write_export
from labkit.manifests import load_file

EXPORTED = Path("exported/lab00")
write_export(export_objects(load_file(HELLO)), EXPORTED)  # what `labkit export FILE -o DIR` does
print((EXPORTED / "README.txt").read_text())
print((EXPORTED / "03-deployment-default-hello.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# On a kind or minikube cluster, in a terminal in this folder (`labs/`):
#
# ```bash
# labkit export ../data/manifests/hello.yaml -o exported/lab00   # the same files as above
# kubectl apply -f exported/lab00/
# kubectl rollout status deployment/hello
# kubectl port-forward service/hello 8080:80 &                   # the Service, on your machine
# curl -s http://127.0.0.1:8080/                                 # Hello labkit!
# ```
#
# (`../tools/real-cluster.sh exported/lab00` does the same after installing Knative, Istio, KServe
# and Flagger at pinned versions, which later labs need.) What differs from the laptop:
#
# - a replica is a container in a pod, scheduled onto a node, with its own IP address; here it
#   is a process on a free port of `127.0.0.1`;
# - the Service is a virtual IP plus a DNS name (`hello.default.svc.cluster.local`), implemented
#   by kube-proxy rules on every node that pick a pod per connection (at random with iptables,
#   round robin with IPVS); here it is a small TCP load balancer that takes turns per connection;
# - starting a replica there may include pulling its image, which can take far longer than
#   starting the process itself. Lab 01 measures the part that remains on every platform.

# %% [markdown] tags=["id-summary"]
# ## Summary
#
# You checked your environment, applied a Kubernetes manifest to a `LocalCluster` and saw two
# real replicas answer in turn, moved a widget from code and by hand, and passed your first
# check. Lab 01 uses all of these to answer: *what problem does serverless solve, what does a
# cold start cost, and when is serverless the better choice?*
