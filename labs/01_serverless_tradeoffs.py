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
# # Lab 01 — Serverless: what it solves, what a cold start costs, and when it pays
#
# **What you will learn** (about 60–75 minutes)
#
# 1. Say what problem serverless computing solves, and name workloads it is made for.
# 2. Measure a real cold start on your machine and see where its time goes.
# 3. Predict how often requests hit a cold start from the traffic and the keep-alive, with a
#    simulator, at scales you cannot run live.
# 4. Compare the monthly cost of pay-per-use and an always-on service, and find the break-even.
# 5. Decide, from numbers, when serverless fits and when it does not.

# %% [markdown] tags=["id-problem"]
# ## The problem serverless solves
#
# On Kubernetes, a microservice is a `Deployment` with some replicas that run all the time. You
# choose how many (or tune an autoscaler), you pay for them when they sit idle at night, and
# someone runs the nodes underneath. For a service that is busy all day that is fine. For code
# that runs now and then — when a file is uploaded, when a webhook fires, once a night — most of
# that capacity waits for work.
#
# **Serverless** platforms (AWS Lambda, Azure Functions, Google Cloud Run, Knative on your own
# cluster) take a function or a container and run it *on demand*: an instance is started when a
# request arrives, as many run as the traffic needs, and after a **keep-alive** period with no
# requests an instance is removed — down to **zero**. You pay per request and per GB-second of
# execution, not per hour of idling, and nobody sizes or patches servers.
#
# Typical uses: event-driven glue (a photo upload makes a thumbnail, a queue message is
# processed), webhooks and chat bots, scheduled jobs, APIs with low or spiky traffic, data
# pipeline steps, prototypes.
#
# The price of scaling to zero is the **cold start**: a request that finds no warm instance waits
# while one is created.

# %% [markdown] tags=["id-idea"]
# ## The idea: warm and cold requests
#
# ```mermaid
# sequenceDiagram
#     participant U as client
#     participant P as platform (gateway / activator)
#     participant I as function instance
#     U->>P: request 1 — no instance (scaled to zero)
#     P->>I: start process, import libraries, load model
#     I-->>P: ready
#     P->>I: request 1
#     I-->>U: response 1 — COLD: start-up + service time
#     U->>P: request 2, within the keep-alive
#     P->>I: request 2
#     I-->>U: response 2 — WARM: service time only
#     Note over I: keep-alive passes with no request: the instance is removed
# ```
#
# Three numbers decide how much cold starts hurt: how long one takes, how often requests come
# (the **arrival rate** λ), and how long an idle instance is kept (the **keep-alive** T).

# %% [markdown] tags=["id-measure-intro"]
# ## Run it for real: one cold start
#
# `labkit.apps.function` is a small but realistic function: it imports scikit-learn, trains a
# handwritten-digit classifier on a data set bundled with scikit-learn, and only then opens its
# port, as a function runtime finishes its initialisation before taking traffic. Each request
# then classifies one image.
#
# `measure_cold_start()` does what a platform does for the first request after scaling to zero:
# it starts the function as a new process, waits until it answers its readiness probe, sends the
# request, then sends 30 warm requests on the same instance and stops it. Your numbers depend on
# your machine, so nbval does not compare this cell's output; the next cell checks a property
# that holds everywhere.

# %% tags=["nbval-ignore-output", "id-measure"]
from labkit.coldstart import measure_cold_start

measured = measure_cold_start(warm_requests=30)
print(measured.summary())

# %% tags=["id-measure-check"]
from labkit.net import process_alive

assert measured.cold_seconds > 10 * measured.warm_p50, "a cold request should be far slower than a warm one"
assert not process_alive(measured.pid), "the function's process should be gone"
print("✓ the cold request took more than 10x the warm median, and the instance is gone again")

# %% tags=["id-measure-plot"]
import matplotlib.pyplot as plt

measured.plot()
plt.show()

# %% [markdown] tags=["id-measure-discuss"]
# Most of the cold request is spent **before** the function can do anything: starting the
# interpreter and importing libraries, then building the model. A warm request only runs the
# prediction. Real platforms add more in front: finding a host, starting a sandbox or container
# (and maybe pulling its image), and routing the request through an activator. Published
# measurements put cold starts from about a hundred milliseconds to several seconds, depending on
# the runtime, package size and memory size.
#
# One cold start is not a problem. What matters is **how often** a request meets one — and that
# depends on traffic and keep-alive, over days of traffic. That is a job for a simulator.

# %% [markdown] tags=["id-sim-intro"]
# ## At scale: the platform simulator
#
# `labkit.sim.simulate_platform` models a serverless platform the way SimFaaS does (Mahmoudi &
# Khazaei): requests arrive at random; each instance serves one request at a time; a request that
# finds an idle instance is warm, otherwise a new instance starts (cold); an idle instance is
# removed `expiration_threshold` seconds (the keep-alive) after its last request ended. It runs a
# week of traffic in a fraction of a second and is seeded, so its numbers repeat exactly.
#
# We model a function whose requests take 0.2 s warm, with a 1 s cold start — about what you
# just measured.

# %% tags=["id-sim-one"]
from labkit.sim import simulate_platform

WARM, COLD_START, WEEK = 0.2, 1.0, 7 * 86400.0


def simulate(rate: float, keep_alive: float, horizon: float = WEEK, **kw):
    return simulate_platform(arrival_rate=rate, warm_service_time=WARM, cold_service_time=WARM + COLD_START,
                             expiration_threshold=keep_alive, max_time=horizon, seed=1, **kw)


week = simulate(rate=0.05, keep_alive=60)
print(f"{week.requests:,} requests in a week at 0.05 req/s with a 60 s keep-alive:")
print(f"  cold-start probability  {week.cold_start_probability:.1%}")
print(f"  response time p50 / p99 {week.response_time_p50:.2f} s / {week.response_time_p99:.2f} s")
print(f"  instances on average    {week.avg_server_count:.3f} (busy {week.avg_running_count:.3f})")

# %% [markdown] tags=["id-sim-long-intro"]
# The simulator is the one from the SimFaaS paper, re-implemented to be fast; the test suite
# checks that both give the same statistics. Here is the workload of SimFaaS's own README —
# 0.9 requests per second, warm 1.991 s, cold 2.244 s, a 10-minute keep-alive — over a million
# simulated seconds (eleven and a half days, about 900,000 requests). A long run shows its
# progress as it goes.

# %% tags=["id-sim-long"]
simfaas_readme = simulate_platform(arrival_rate=0.9, warm_service_time=1.991, cold_service_time=2.244,
                                   expiration_threshold=600, max_time=1e6, seed=1, progress=True)
print(f"{simfaas_readme.requests:,} requests: cold-start probability {simfaas_readme.cold_start_probability:.4f}, "
      f"{simfaas_readme.avg_server_count:.2f} instances on average, "
      f"of which {simfaas_readme.avg_running_count:.2f} busy ({simfaas_readme.utilization:.0%} utilisation)")

# %% [markdown] tags=["id-sim-long-discuss"]
# With a 10-minute keep-alive, one request in about a thousand is cold — but the platform
# keeps almost eight instances alive for a load that keeps fewer than two of them busy. The
# keep-alive trades idle capacity (the provider's cost) for fewer cold starts (the user's).

# %% [markdown] tags=["id-sim-sweep-intro"]
# How does the cold-start probability change with the keep-alive, and with the traffic? Each
# point below is one simulated run (about 20,000 requests, at most a week).

# %% tags=["id-sim-sweep"]
import numpy as np

RATES = [0.01, 0.1, 1.0]  # requests per second
KEEP_ALIVES = [1, 5, 15, 30, 60, 120, 300, 600, 1200]  # seconds


def horizon_for(rate: float) -> float:
    return min(20_000 / rate, WEEK)


by_keep_alive = {r: [simulate(r, t, horizon_for(r)).cold_start_probability for t in KEEP_ALIVES] for r in RATES}
rate_grid = np.logspace(-3, 1, 9)
by_rate = {t: [simulate(r, t, horizon_for(r)).cold_start_probability for r in rate_grid] for t in (10, 60, 600)}

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for r, probabilities in by_keep_alive.items():
    line, = left.semilogx(KEEP_ALIVES, probabilities, "o-", label=f"{r} req/s (simulated)")
    left.semilogx(KEEP_ALIVES, np.exp(-r * np.array(KEEP_ALIVES)), "--", color=line.get_color())
left.set(title="cold starts vs keep-alive (dashed: exp(-rate x keep-alive))", xlabel="keep-alive (s)",
         ylabel="cold-start probability")
left.legend()
for t, probabilities in by_rate.items():
    right.semilogx(rate_grid, probabilities, "o-", label=f"keep-alive {t} s")
right.set(title="cold starts vs arrival rate", xlabel="requests per second", ylabel="cold-start probability")
right.legend()
plt.show()

# %% tags=["id-sim-sweep-check"]
from itertools import pairwise

slack = 0.02  # sampling noise: a longer keep-alive can never make cold starts clearly more likely
for r, p in by_keep_alive.items():
    assert all(b <= a + slack for a, b in pairwise(p)), f"not decreasing with keep-alive at {r} req/s"
for t, p in by_rate.items():
    assert all(b <= a + slack for a, b in pairwise(p)), f"not decreasing with rate at keep-alive {t} s"
for r in RATES:
    print(f"{r:>5} req/s: cold starts {by_keep_alive[r][KEEP_ALIVES.index(60)]:6.1%} with a 60 s keep-alive, "
          f"{by_keep_alive[r][KEEP_ALIVES.index(600)]:6.1%} with 600 s")

# %% [markdown] tags=["id-sim-discuss"]
# What stands out:
#
# - **A request is cold when the gap since the previous request is longer than the keep-alive.**
#   For random (Poisson) traffic that gap is longer than T with probability $e^{-\lambda T}$ —
#   the dashed lines — as long as requests rarely overlap. So a function called once every few
#   minutes meets cold starts often unless the platform keeps it alive for many minutes, and the
#   platform pays for that idle memory.
# - **Busy functions are almost always warm.** At 1 req/s a gap longer than a minute practically
#   never happens. The few cold starts left come from *overlap*: an instance serves one request
#   at a time, so a request that arrives while every instance is busy starts a new one. That is
#   why the simulated points sit above the dashed line at higher rates, and why a longer
#   keep-alive cannot remove them.
# - So cold starts are mostly a problem of *rare* and *bursty* traffic — exactly the workloads
#   serverless is sold for.
#
# Real traffic is rarely Poisson. With the same mean rate, bursts leave long silent gaps between
# them, and each burst starts cold. Compare Poisson arrivals, bursty arrivals (on for about a
# minute, off for about ten) and a replayed trace, all at the trace's mean rate. The trace,
# `data/traces/synthetic_trace.csv`, is **synthetic**: one day shaped like a function's
# invocations in published serverless traces (a daily cycle with bursts on top).

# %% tags=["id-sim-patterns"]
from pathlib import Path

import labkit
from labkit.sim import Bursty, TraceReplay

DATA = Path(labkit.__file__).resolve().parents[1] / "data"  # the data/ folder next to the labkit package
trace = TraceReplay(DATA / "traces" / "synthetic_trace.csv", loop=True)
mean_rate = trace.mean_rate
patterns = {
    "Poisson": None,
    "bursty (MMPP)": Bursty(mean_rate * 11, 0.0, mean_high_duration=60, mean_low_duration=600),
    "trace replay": trace,
}
cold_by_pattern = {}
for name, workload in patterns.items():
    kw = {"workload": workload} if workload else {"arrival_rate": mean_rate}
    result = simulate_platform(**kw, warm_service_time=WARM, cold_service_time=WARM + COLD_START,
                               expiration_threshold=60, max_time=WEEK, seed=1)
    cold_by_pattern[name] = result.cold_start_probability
    print(f"{name:<14} mean {result.requests / WEEK:.4f} req/s: cold starts {result.cold_start_probability:6.1%}")
assert cold_by_pattern["trace replay"] > cold_by_pattern["Poisson"]

# %% [markdown] tags=["id-dashboard-intro"]
# ## Explore: the serverless dashboard
#
# The dashboard runs the simulator for the traffic pattern, rate, keep-alive, cold start, service
# time and memory size you choose, and prices the result. It shows the cold-start probability,
# the response-time percentiles, the number of instances over time, and the monthly cost of
# serverless next to one always-on instance, with the break-even rate marked.
#
# Things to try:
#
# - At 0.05 req/s, lower the keep-alive from 600 s to 30 s. Watch the p99 and the instance count.
# - Switch the pattern to *bursty*, then *trace replay*. Which has the most cold starts?
# - Raise the cold start to 5 s: which percentile moves, and which does not?
# - Move the rate past the break-even rate: when does an always-on instance become cheaper?
#   Change the memory size: why does the break-even move? (Here memory changes only the price;
#   on Lambda it also buys CPU, so a bigger function may also run faster.)

# %% tags=["nbval-ignore-output", "id-dashboard"]
from labkit.widgets.serverless import serverless_dashboard

dash = serverless_dashboard(arrival_rate=0.05, keep_alive=600)
dash

# %% [markdown] tags=["id-dashboard-drive-intro"]
# Cells can drive the dashboard too. This one asks for bursty traffic with a one-minute
# keep-alive (the dashboard above redraws), and the next reads the result.

# %% tags=["nbval-ignore-output", "id-dashboard-drive"]
calm = dash.result
dash.set(pattern="bursty", keep_alive=60)

# %% tags=["id-dashboard-state"]
burst = dash.result
assert burst.cold_start_probability > calm.cold_start_probability
print(f"Poisson, keep-alive 600 s: {calm.cold_start_probability:.1%} cold, p99 {calm.response_time_p99:.2f} s")
print(f"bursty,  keep-alive  60 s: {burst.cold_start_probability:.1%} cold, p99 {burst.response_time_p99:.2f} s")

# %% [markdown] tags=["id-limits-intro"]
# ## How long may a request take?
#
# A serverless platform runs your code *per request*, so it puts a limit on how long one
# request may take: an instance that never answers would hold a slot (and your money)
# forever, and the platform could never drain it to scale down.
#
# | platform | limit | default | maximum |
# | --- | --- | --- | --- |
# | AWS Lambda | function `Timeout`: the whole run | 3 s | 900 s (**15 minutes**) |
# | Knative `timeoutSeconds` | wait for the **first byte** of the answer | 300 s | 600 s (`max-revision-timeout-seconds`) |
# | Knative `responseStartTimeoutSeconds` | the same, usually shorter | off (300 s when `timeoutSeconds` is longer) | `timeoutSeconds` |
# | Knative `idleTimeoutSeconds` | a gap with no byte, once the answer has started | off | `timeoutSeconds` |
#
# (AWS: [Configure Lambda function timeout](https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html),
# [Lambda quotas](https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
# Knative: [config-defaults](https://knative.dev/docs/serving/configuration/config-defaults/).)
#
# Lambda stops your *code* after its timeout, whatever it is doing. Knative limits the
# *request*: its queue-proxy, in front of every pod, answers **504** `request timeout`
# when the first byte of the answer has not come in time. Once the answer has started,
# `timeoutSeconds` no longer applies: a stream may run on, and only `idleTimeoutSeconds`
# ends one that goes quiet (Knative's `pkg/http/handler/timeout.go`). On a cluster the
# operator can raise `max-revision-timeout-seconds`; on Lambda 15 minutes is a hard limit.
#
# labkit reads the defaults and maxima from one module, `labkit.serving.timeouts`, the same
# code that validates your YAML and that the queue-proxy uses to cut requests:

# %% tags=["id-limits-defaults"]
from labkit.serving.timeouts import KNATIVE_DEFAULTS, revision_timeouts

print("config-defaults as Knative ships them:")
print(f"  revision-timeout-seconds                {KNATIVE_DEFAULTS.revision_timeout_seconds:>4} s")
print(f"  max-revision-timeout-seconds            {KNATIVE_DEFAULTS.max_revision_timeout_seconds:>4} s")
print(f"  revision-response-start-timeout-seconds {KNATIVE_DEFAULTS.response_start:>4} s")
print(f"  revision-idle-timeout-seconds           {KNATIVE_DEFAULTS.revision_idle_timeout_seconds:>4} s (0 = none)")
print()
print("what a Revision gets (timeoutSeconds, responseStartTimeoutSeconds, idleTimeoutSeconds):")
for timeout, start, idle in [(None, None, None), (600, None, None), (60, 5, 10)]:
    limits = revision_timeouts(timeout, start, idle)
    print(f"  spec {timeout, start, idle!s:<18} -> {limits.timeout:g} s, "
          f"{limits.response_start:g} s, {limits.idle:g} s")

# %% [markdown] tags=["id-limits-defaults-explain"]
# The second line is a trap worth knowing: raise `timeoutSeconds` to 600 and Knative's
# defaulting gives the revision `responseStartTimeoutSeconds: 300` (the cluster default,
# because it is below your timeout), so a request whose answer has not *started* is still
# cut after 5 minutes. Set both when you need long answers.
#
# ### A long request, cut live
#
# A Knative Service running `labkit/httpbin` with `timeoutSeconds: 2`. Its `/delay/N`
# answers after N seconds.

# %% tags=["nbval-ignore-output", "id-limits-live"]
import time
from contextlib import ExitStack

import httpx

from labkit.cluster import LocalCluster
from labkit.serving.service import knative_service

limits_lab = ExitStack()
limits_cluster = limits_lab.enter_context(LocalCluster())
limits_cluster.apply('''
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: report
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      timeoutSeconds: 2
      containers:
        - image: labkit/httpbin
''')
report = knative_service(limits_cluster, "report")
for seconds in (1, 5):
    began = time.perf_counter()
    answer = httpx.get(f"{report.url}/delay/{seconds}", timeout=30)
    print(f"a {seconds} s report: {answer.status_code} {answer.text[:30]!r} after "
          f"{time.perf_counter() - began:.1f} s (limit that fired: "
          f"{answer.headers.get('x-labkit-timeout')})")

# %% [markdown] tags=["id-limits-stream-intro"]
# The 5-second report got `504 request timeout` after 2 s: the body Knative's queue-proxy
# sends (labkit adds the header `x-labkit-timeout` to say which of the three limits fired;
# Knative's answer is the same for all three). Now an answer that *starts* at once and
# streams one byte a second for 4 s, twice the limit:

# %% tags=["id-limits-stream"]
answer = httpx.get(f"{report.url}/drip?duration=4&numbytes=4", timeout=30)
print("a 4 s stream, one byte a second:", answer.status_code, answer.text)

# %% tags=["id-limits-check"]
slow = httpx.get(f"{report.url}/delay/5", timeout=30)
assert (slow.status_code, slow.text) == (504, "request timeout")
assert httpx.get(f"{report.url}/delay/1", timeout=30).status_code == 200
assert httpx.get(f"{report.url}/drip?duration=4&numbytes=4", timeout=30).text == "****"

# %% [markdown] tags=["id-async-intro"]
# The stream was not cut: `timeoutSeconds` bounds the wait for the first byte, not the
# whole answer. (Add `idleTimeoutSeconds: 1` and a stream with 2-second gaps ends with
# `request timeout` appended to what it sent.)
#
# ### Long jobs: do not make the caller wait
#
# Whatever the limit, a job that takes minutes should not hold an HTTP request open: the
# caller's connection, a proxy or a scale-down can end it, and a retry starts the job
# again. The serverless answer is **asynchronous**: the caller hands over an *event* and
# gets `202 Accepted` at once; a subscriber does the work; its result is another event.
# Lambda has the same split: an `Event` invocation answers 202 and runs the function later
# ([asynchronous invocation](https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html)).
#
# ```mermaid
# sequenceDiagram
#     participant C as caller (shop)
#     participant B as Broker "jobs"
#     participant W as report-worker (Knative Service)
#     participant I as inbox
#     C->>B: POST CloudEvent com.example.report.requested
#     B-->>C: 202 Accepted (in ms)
#     B->>W: Trigger make-report: deliver the event
#     Note over W: 5 s of work
#     W-->>B: 200 + reply event com.example.report.ready
#     B->>I: Trigger report-ready: deliver the result
# ```
#
# The worker is your own code: a small FastAPI app written to a file and run by uvicorn as a
# Knative Service (`command:` instead of a built-in image; `$(PORT)` is the port Knative gives it).

# %% tags=["id-async-worker"]
import sys
import tempfile
from pathlib import Path

from labkit.eventing.broker_control import broker_handle
from labkit.eventing.sink import event_display_manifest, wait_received

WORKER = '''
"""A report worker: takes report.requested, works 5 s, answers with report.ready."""
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/")
def ready() -> dict:  # readiness
    return {}


@app.post("/")
def work(request_event: dict, request: Request) -> JSONResponse:
    time.sleep(5)  # the long job (a plain def runs in uvicorn's thread pool)
    return JSONResponse({"month": request_event["month"], "rows": 1234}, headers={
        "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/report-worker",
        "ce-type": "com.example.report.ready", "ce-subject": request.headers["ce-id"]})
'''
workdir = Path(limits_lab.enter_context(tempfile.TemporaryDirectory(prefix="lab01-")))
worker_file = workdir / "worker.py"
worker_file.write_text(WORKER)

limits_cluster.apply([event_display_manifest("inbox"), f'''
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: report-worker
spec:
  template:
    spec:
      timeoutSeconds: 60
      containers:
        - image: python
          command: ["{sys.executable}", "-m", "uvicorn", "worker:app", "--app-dir", "{workdir}",
                    "--host", "127.0.0.1", "--port", "$(PORT)"]
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: jobs
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: make-report
spec:
  broker: jobs
  filter:
    attributes: {{type: com.example.report.requested}}
  subscriber:
    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: report-worker}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: report-ready
spec:
  broker: jobs
  filter:
    attributes: {{type: com.example.report.ready}}
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: inbox}}
'''])
jobs = broker_handle(limits_cluster, "jobs")

# %% tags=["nbval-ignore-output", "id-async-send"]
began = time.perf_counter()
accepted = httpx.post(jobs.url, headers={
    "ce-specversion": "1.0", "ce-id": "report-42", "ce-source": "/shop",
    "ce-type": "com.example.report.requested", "content-type": "application/json"},
    content=b'{"month": "2026-11"}')
print(f"the caller got {accepted.status_code} {accepted.reason_phrase} after "
      f"{time.perf_counter() - began:.3f} s and is free to go")

# %% tags=["nbval-ignore-output", "id-async-done"]
[ready] = wait_received(limits_cluster.url("Service", "inbox"), 1, timeout=60)
print(f"{time.perf_counter() - began:.1f} s later the inbox got "
      f"{ready['attributes']['type']} for {ready['attributes']['subject']}: {ready['data']}")
assert accepted.status_code == 202 and ready["attributes"]["subject"] == "report-42"

# %% [markdown] tags=["id-async-explain"]
# The caller waited a tenth of a second; the 5-second job ran in the worker, and its result
# came back as an event. The worker's own request (the broker's delivery) is still bound
# by the worker's `timeoutSeconds` (60 s here, at most 600 s by default), and a failed
# delivery is retried by the Trigger's `delivery` policy (lab 06). For work longer than any
# request should last, Knative Eventing has **JobSink**: each event starts a Kubernetes
# `Job`, which runs to completion with no HTTP request open
# ([JobSink](https://knative.dev/docs/eventing/sinks/job-sink/)).
#
# **Take-away.** Serverless limits the length of a request (Lambda: 15 minutes of code;
# Knative: 5 minutes by default to start answering, 10 at most unless the operator raises
# it). Long work goes asynchronous: an event in, `202` out, the work done by a subscriber.

# %% tags=["id-limits-cleanup"]
EXPORTED = Path("exported/lab01")  # for "On a real cluster" below
limits_cluster.export(EXPORTED)
limits_lab.close()

# %% [markdown] tags=["id-cost-intro"]
# ## Cost: pay-per-use against always-on
#
# `labkit.sim.Prices` holds public list prices (AWS Lambda x86 in us-east-1: \$0.0000166667 per
# GB-second and \$0.20 per million requests; the always-on alternative is the smallest AWS
# Fargate task, 0.25 vCPU and 0.5 GB, at about \$0.0123 per hour; sources and date in its
# docstring). A serverless bill grows in proportion to traffic; an always-on instance costs the
# same every hour. Where the two lines cross is the **break-even rate**.
#
# Here is our function with 512 MB of memory (Lambda gives CPU in proportion to memory; 512 MB is
# the nearest match for that Fargate task):

# %% tags=["id-cost"]
from labkit.sim import always_on_monthly_cost, break_even_rate, serverless_monthly_cost_for_rate

MEMORY_MB = 512
always_on = always_on_monthly_cost(1)
break_even = break_even_rate(WARM, MEMORY_MB)
print(f"one always-on instance: ${always_on:,.2f} per month; it can serve at most {1 / WARM:.0f} req/s")
print(f"break-even rate: {break_even:.2f} req/s ({break_even * 86400:,.0f} requests a day)")
for r in (0.001, 0.01, 0.1, 1.0, 10.0):
    serverless = serverless_monthly_cost_for_rate(r, WARM, MEMORY_MB)
    cheaper = "serverless" if serverless < always_on else "always-on"
    print(f"  {r:>6} req/s: serverless ${serverless:>8,.2f} per month -> {cheaper} is cheaper")

# %% [markdown] tags=["id-fit"]
# ## When serverless fits, and when it does not
#
# Put the numbers together:
#
# - **Intermittent and event-driven work fits.** Well below the break-even rate, pay-per-use
#   costs a small fraction of an idle server (the table above). The cold starts it brings are the
#   ones you measured and simulated: on rare traffic, a good share of requests pay the start-up
#   time on top. For a thumbnail, a notification or a nightly job, nobody notices.
# - **Steady high load does not.** Above the break-even rate every request costs more than its
#   share of a busy always-on instance. A service busy all day has few cold starts but pays the
#   pay-per-use premium on every request.
# - **Latency-critical work on rare traffic does not either.** If the p99 must stay well under a
#   cold start, rare traffic makes cold starts common enough to land in the p99. Keeping an
#   instance warm (Knative `min-scale: "1"`, Lambda provisioned concurrency) fixes the latency —
#   at the price of an always-on instance, which is the thing serverless was meant to avoid.
#
# Now make these calls yourself.

# %% [markdown] tags=["id-exercise-1"]
# ## Exercises
#
# ### Exercise 1 — the break-even rate, free tier included (2 points)
#
# The costs above leave out Lambda's **free tier**: every month, an account's first 1 million
# requests and 400,000 GB-seconds cost nothing (labkit's cost model omits it because it is per
# account, not per function). Take an account that runs just one function:
# `BREAK_EVEN_TASK.mean_duration` seconds per request with `BREAK_EVEN_TASK.memory_mb` MB of
# memory, and the allowances `free_requests` and `free_gb_seconds`. With the default `Prices()`
# and labkit's 730-hour month (`SECONDS_PER_MONTH`), at how many requests **per second** does
# its monthly bill equal one always-on instance? Work it out from the prices (`gb_second`,
# `per_million_requests`, `always_on_hourly`); `break_even_rate()` ignores the free tier, so it
# gives a different number. Store the result in `break_even_answer`.

# %% tags=["id-exercise-1-solution"]
from labkit.grading.lab01 import BREAK_EVEN_TASK
from labkit.sim import SECONDS_PER_MONTH, Prices

prices, task = Prices(), BREAK_EVEN_TASK
print(task)
### BEGIN SOLUTION
gb_seconds_per_request = task.mean_duration * task.memory_mb / 1024
cost_per_request = gb_seconds_per_request * prices.gb_second + prices.per_million_requests / 1e6
free_value = task.free_gb_seconds * prices.gb_second + task.free_requests * prices.per_million_requests / 1e6
# Past both allowances the bill is linear: requests x cost_per_request - free_value.
requests = (prices.always_on_hourly * SECONDS_PER_MONTH / 3600 + free_value) / cost_per_request
assert requests > task.free_requests and requests * gb_seconds_per_request > task.free_gb_seconds
break_even_answer = requests / SECONDS_PER_MONTH
### END SOLUTION
print(f"break-even with the free tier at {break_even_answer:.3f} req/s "
      f"(without it: {break_even_rate(task.mean_duration, task.memory_mb):.3f} req/s)")

# %% tags=["check", "points-2", "id-exercise-1-check"]
from labkit.grading.checks import answer
from labkit.grading.lab01 import check_break_even_rate

check_break_even_rate(answer("break_even_answer"))

# %% [markdown] tags=["id-exercise-2"]
# ### Exercise 2 — a keep-alive for a target (2 points)
#
# `KEEP_ALIVE_TASK` describes a rarely called function (its rate, warm and cold service times)
# and a target: at most `target` of its requests may be cold. Find the **shortest** keep-alive
# (in seconds) that meets the target, using `simulate_platform` with the task's parameters
# (`max_time` and `seed` included). The formula $e^{-\lambda T}$ gives a first guess; the
# simulator has the last word. Store it in `keep_alive_answer`.

# %% tags=["id-exercise-2-solution"]
import math

from labkit.grading.lab01 import KEEP_ALIVE_TASK

task = KEEP_ALIVE_TASK
print(task)
### BEGIN SOLUTION


def cold_probability(keep_alive: float) -> float:
    return simulate_platform(arrival_rate=task.arrival_rate, warm_service_time=task.warm_service_time,
                             cold_service_time=task.cold_service_time, expiration_threshold=keep_alive,
                             max_time=task.max_time, seed=task.seed).cold_start_probability


guess = -math.log(task.target) / task.arrival_rate
keep_alive_answer = next(t for t in range(int(0.8 * guess), int(2 * guess), 5) if cold_probability(t) <= task.target)
### END SOLUTION
print(f"keep-alive {keep_alive_answer} s")

# %% tags=["check", "points-2", "id-exercise-2-check"]
from labkit.grading.checks import answer
from labkit.grading.lab01 import check_keep_alive

check_keep_alive(answer("keep_alive_answer"))

# %% [markdown] tags=["id-exercise-3"]
# ### Exercise 3 — serverless or always-on? (3 points)
#
# Four workloads, each with a latency objective (its p99) and the always-on deployment it could
# run on instead. The platform keeps idle instances for `KEEP_ALIVE` = 600 s. Serverless fits a
# workload when it is **cheaper** than the always-on deployment (`result.monthly_cost` against
# `always_on_monthly_cost(scenario.always_on_instances)`) **and** meets the **p99 objective**
# (`result.response_time_p99 <= scenario.p99_slo`). `scenario.simulate()` runs the simulator for
# a scenario. Build `fits`: scenario name → `"serverless"` or `"always-on"`.

# %% tags=["id-exercise-3-solution"]
from labkit.grading.lab01 import SCENARIOS, scenario_table

print(scenario_table())
### BEGIN SOLUTION
fits = {}
for name, scenario in SCENARIOS.items():
    result = scenario.simulate()
    cost, alternative = result.monthly_cost, always_on_monthly_cost(scenario.always_on_instances)
    cheaper = cost < alternative
    fast_enough = result.response_time_p99 <= scenario.p99_slo
    fits[name] = "serverless" if cheaper and fast_enough else "always-on"
    print(f"{name:<13} ${cost:>7.2f} vs ${alternative:>6.2f}, p99 {result.response_time_p99:5.2f} s "
          f"(objective {scenario.p99_slo} s), cold {result.cold_start_probability:6.1%} -> {fits[name]}")
### END SOLUTION

# %% tags=["check", "points-3", "id-exercise-3-check"]
from labkit.grading.checks import answer
from labkit.grading.lab01 import check_serverless_fit

check_serverless_fit(answer("fits"))

# %% [markdown] tags=["id-real-cluster"]
# ## On a real cluster
#
# On Kubernetes with Knative Serving, our function would be a Knative `Service`. Knative gives the
# container its port in `$PORT`, as labkit does; `containerConcurrency: 1` means one request per
# instance, like our simulator; the annotations set the scale bounds and how long an idle
# revision keeps its last pod. (labkit's own Knative `Service` kind arrives in a later lab.)
#
# ```yaml
# apiVersion: serving.knative.dev/v1
# kind: Service
# metadata:
#   name: digits
# spec:
#   template:
#     metadata:
#       annotations:
#         autoscaling.knative.dev/min-scale: "0"    # scale to zero when idle ("1" = always warm)
#         autoscaling.knative.dev/max-scale: "20"
#         autoscaling.knative.dev/scale-to-zero-pod-retention-period: "10m"  # ~ the keep-alive
#     spec:
#       containerConcurrency: 1
#       containers:
#         - image: registry.example.com/labkit/digits-function:1.0  # runs python -m labkit.apps.function
#           ports:
#             - containerPort: 8080
#           readinessProbe:
#             httpGet:
#               path: /
#           resources:
#             requests: {cpu: 250m, memory: 512Mi}
#             limits: {memory: 512Mi}
# ```
#
# What this lab did run (the `report` Service with its 2 s timeout, the `jobs` Broker, its two
# Triggers, the worker and the inbox) was exported, just before the clean-up cell stopped it,
# with `limits_cluster.export("exported/lab01")`: one file per object for `kubectl apply`, the
# built-in images replaced by the public images they stand for, and a `README.txt`:

# %% tags=["id-real-cluster-export"]
print((EXPORTED / "README.txt").read_text())
print((EXPORTED / "03-service-default-report.yaml").read_text())

# %% [markdown] tags=["id-real-cluster-run"]
# The worker is your own FastAPI app (`image: python` with a `command` naming a file on this
# machine, which the export keeps as it is and notes in `README.txt`): on a cluster, build an
# image from it (`FROM python:3.11-slim`, `RUN pip install fastapi uvicorn`, `COPY worker.py .`,
# `CMD uvicorn worker:app --host 0.0.0.0 --port $PORT`), push it, and put its name in `image:`
# without the `command`. Then, in a terminal in this folder (`labs/`):
#
# ```bash
# ../tools/real-cluster.sh exported/lab01   # installs Knative, Istio, KServe, Flagger (once), applies, checks
# # or, on a cluster that has Knative Serving and Eventing:
# kubectl apply -f exported/lab01/
# kubectl get ksvc,broker,trigger                 # READY True, each with its URL
# URL=$(kubectl get ksvc report -o jsonpath='{.status.url}')
# curl -s -o /dev/null -w '%{http_code}\n' -H "Host: ${URL#*://}" http://INGRESS/delay/5   # 504 after 2 s
# ```
#
# (`INGRESS` is the Istio ingress gateway's address, e.g. `127.0.0.1:8080` after
# `kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80`.)
#
# What differs from the laptop:
#
# - **The cold start is longer.** Before the process starts, a pod is scheduled, the image may be
#   pulled, the container and the `queue-proxy` sidecar start; while there is no pod, the
#   **activator** holds the request and forwards it once the pod is ready.
# - **Keep-alive is not one number.** Knative scales to zero when its autoscaler has seen no
#   traffic for the stable window (60 s by default), then waits up to
#   `scale-to-zero-grace-period` (30 s) and at least `scale-to-zero-pod-retention-period`
#   (0 s by default). So idle pods live roughly 1–1.5 minutes unless you raise the retention.
# - **Who pays for idle time differs.** On Lambda you pay only while a request runs and the
#   provider pays for warm idle instances; on your own Knative cluster an idle pod holds node
#   memory you pay for, and scale to zero frees it for other work.

# %% [markdown] tags=["id-summary-intro"]
# ## Summary
#
# The question: *what problem does serverless solve, what are its use cases, and when is it
# clearly better or worse than deploying a microservice on Kubernetes?* Your answer, from your
# numbers (this cell reads them from the variables above, so they are yours):

# %% tags=["nbval-ignore-output", "id-summary"]
rare_1min, rare_10min = (by_keep_alive[0.01][KEEP_ALIVES.index(t)] for t in (60, 600))
busy_1min = by_keep_alive[1.0][KEEP_ALIVES.index(60)]
print(f"- A cold start on this machine took {measured.cold_seconds * 1000:.0f} ms against "
      f"{measured.warm_p50 * 1000:.1f} ms warm ({measured.slowdown:.0f}x); "
      f"{measured.cold_breakdown()['import'] / measured.cold_seconds:.0%} of it importing libraries.")
print(f"- At 0.01 req/s a 1-minute keep-alive leaves {rare_1min:.1%} of requests cold; only a 10-minute "
      f"keep-alive, an idle instance most of the time, brings that to {rare_10min:.1%}. "
      f"At 1 req/s a 1-minute keep-alive already gives {busy_1min:.1%}.")
print(f"- Bursty traffic is worse: at the same mean rate and a 1-minute keep-alive, the trace had "
      f"{cold_by_pattern['trace replay']:.1%} cold requests against {cold_by_pattern['Poisson']:.1%} for Poisson.")
print(f"- Pay-per-use is cheaper than one always-on instance (${always_on:.2f}/month) below "
      f"{break_even:.2f} req/s for a 0.2 s, 512 MB function; Lambda's free tier moved your exercise's "
      f"break-even from {break_even_rate(BREAK_EVEN_TASK.mean_duration, BREAK_EVEN_TASK.memory_mb):.2f} "
      f"to {break_even_answer:.2f} req/s.")
for name, choice in fits.items():
    print(f"- {name}: {choice}")

# %% [markdown] tags=["id-summary-text"]
# Serverless removes the work and the cost of keeping servers for code that runs now and then:
# the platform starts instances on demand, scales with the traffic and back to zero, and bills
# only the time spent working. It is clearly better for **intermittent, event-driven workloads**
# (uploads, webhooks, notifications, scheduled jobs, spiky APIs) well below the break-even rate,
# where it costs cents instead of an idle server and its cold starts do not break anyone's
# deadline. It is clearly worse for **steady high load** above the break-even rate, where every
# request pays the pay-per-use premium, and for **latency-critical work on rare or bursty
# traffic**, where cold starts reach the p99; keeping instances warm fixes that only by paying
# for always-on capacity again. Next: lab 02 leaves single functions for the network between
# services — what a service mesh adds to Kubernetes networking.
