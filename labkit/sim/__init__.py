"""Simulations: a serverless platform (cold starts, keep-alive, cost) and its workloads.

    from labkit.sim import Bursty, simulate_platform, break_even_rate

    r = simulate_platform(arrival_rate=0.9, warm_service_time=1.991, cold_service_time=2.244,
                          expiration_threshold=600, max_time=86400, seed=1)
    r.cold_start_probability, r.avg_server_count, r.response_time_p99, r.monthly_cost
    simulate_platform(workload=Bursty(5.0, 0.1), expiration_threshold=60, seed=1)
    break_even_rate(mean_duration=0.2, memory_mb=512)   # req/s where always-on gets cheaper

The model and where it follows SimFaaS are described in :mod:`labkit.sim.platform`.

Every simulator's result is a :class:`~labkit.sim.results.SimResult`: ``r.summary()`` is a flat
dict of scalars (percentiles as ``<what>_p<q>``, by :func:`labkit.stats.percentile`),
``print(r)`` reads it out, and every ``seed`` defaults to 1.

A client sidecar under failures (retries, circuit breaking, outlier detection), with the
sidecar's own policy code (:mod:`labkit.sim.mesh`):

    simulate_mesh(failure_rate=0.5, retries={"attempts": 2, "retryOn": "5xx"},
                  outlier_detection={"consecutive5xxErrors": 3}).success_rate

A KServe request's path, hop by hop (sidecars, activator, queue-proxy, model server), on top
of the autoscaling simulation (:mod:`labkit.sim.dataflow`):

    simulate_dataflow(arrival_rate=0.02, min_replicas=0, model="digits-random-forest").breakdown("cold")

A Knative Service's revisions over days: gradual rollout, garbage collection and the progress
deadline, with the live controller's own functions (:mod:`labkit.sim.revisions`):

    simulate_revisions([Deploy(0), Deploy(3600), Deploy(7200, startup=None)], horizon=86400)
"""

from labkit.sim.autoscaling import AutoscalingResult, burst_workload, clients_workload, simulate_autoscaling
from labkit.sim.cost import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    Prices,
    always_on_monthly_cost,
    break_even_rate,
    serverless_monthly_cost,
    serverless_monthly_cost_for_rate,
)
from labkit.sim.dataflow import DataflowResult, simulate_dataflow
from labkit.sim.delivery import DeliverySimResult, simulate_delivery
from labkit.sim.mesh import MeshSimResult, simulate_mesh
from labkit.sim.platform import SERVICE_DISTRIBUTIONS, PlatformResult, simulate_platform
from labkit.sim.results import SimResult
from labkit.sim.revisions import Deploy, RevisionsResult, simulate_revisions
from labkit.sim.workloads import (
    Bursty,
    Diurnal,
    Poisson,
    TraceReplay,
    Workload,
    as_generator,
    interarrival_cv,
)

__all__ = [
    "HOURS_PER_MONTH",
    "SECONDS_PER_MONTH",
    "SERVICE_DISTRIBUTIONS",
    "AutoscalingResult",
    "Bursty",
    "DataflowResult",
    "DeliverySimResult",
    "Deploy",
    "Diurnal",
    "MeshSimResult",
    "PlatformResult",
    "Poisson",
    "Prices",
    "RevisionsResult",
    "SimResult",
    "TraceReplay",
    "Workload",
    "always_on_monthly_cost",
    "as_generator",
    "break_even_rate",
    "burst_workload",
    "clients_workload",
    "interarrival_cv",
    "serverless_monthly_cost",
    "serverless_monthly_cost_for_rate",
    "simulate_autoscaling",
    "simulate_dataflow",
    "simulate_delivery",
    "simulate_mesh",
    "simulate_platform",
    "simulate_revisions",
]
