"""One prediction through the mesh, timed hop by hop (lab 09's live measurement).

For each request sent through a client sidecar to an InferenceService, three sources are
joined by the `x-request-id` the client sidecar assigns:

- our own clock around the call (end to end), and the same request sent straight to the
  InferenceService's local URL (no mesh), alternating so both see the same machine;
- the access logs of the client sidecar (outbound) and the predictor's sidecar (inbound): how
  long each held the request and how long its upstream took;
- the `Server-Timing` header: the model server's decode, predict and encode, then the
  queue-proxy's and the activator's own time (:func:`labkit.inference.timing.parse_server_timing`).

Differences of nested times give each hop; the time no hop reports (HTTP hand-offs between
Knative's route, activator, queue-proxy and the model server) is what is left of the server
sidecar's upstream time once the header's entries are taken off it.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import httpx

from labkit.inference.timing import parse_server_timing
from labkit.mesh.control import control_plane

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["KNATIVE_HOPS", "LIVE_HOPS", "measure_path", "medians", "model_server_pids"]

KNATIVE_HOPS = ("activator-wait", "activator", "queue-proxy")
LIVE_HOPS = ("client library + loopback", "client sidecar + wire", "server sidecar", *KNATIVE_HOPS,
             "Knative HTTP hand-offs", "decode", "predict", "encode")
"""The hops of one request, in path order; each row of `measure_path` also has "end to end"
and "no mesh"."""


def measure_path(cluster: LocalCluster, name: str, host: str, body: dict[str, Any],
                 n: int = 300) -> list[dict[str, float]]:
    """Send `n` V2 inference requests for InferenceService `name` through the mesh (Host
    `host`, from the cluster's client sidecar) and `n` straight to its local URL, alternating;
    return per request the milliseconds of each of `LIVE_HOPS`, "end to end" and "no mesh"."""
    plane = control_plane(cluster)
    client = plane.client()
    path = f"/v2/models/{name}/infer"
    calls = []
    with httpx.Client(base_url=client.outbound_url, headers={"Host": host}) as mesh, \
            httpx.Client(base_url=cluster.url("InferenceService", name)) as direct:
        for _ in range(n):
            started = time.perf_counter()
            answer = mesh.post(path, json=body)
            through_mesh = (time.perf_counter() - started) * 1000
            answer.raise_for_status()
            started = time.perf_counter()
            direct.post(path, json=body).raise_for_status()
            straight = (time.perf_counter() - started) * 1000
            calls.append((answer.headers["x-request-id"], through_mesh, straight,
                          parse_server_timing(answer.headers["server-timing"])))
    outbound = {r.request_id: r for r in client.telemetry.access_records()}
    inbound = {r.request_id: r for r in plane.sidecar(name).telemetry.access_records()}
    rows = []
    for request_id, through_mesh, straight, model in calls:
        out, into = outbound[request_id], inbound[request_id]
        if into.upstream_ms is None:  # the sidecar answered by itself: no upstream time to split
            raise RuntimeError(f"request {request_id}: the predictor's sidecar reached no upstream")
        rows.append({
            "client library + loopback": through_mesh - out.duration_ms,
            "client sidecar + wire": out.duration_ms - into.duration_ms,
            "server sidecar": into.duration_ms - into.upstream_ms,
            "Knative HTTP hand-offs": into.upstream_ms - sum(model.values()),
            **dict.fromkeys(KNATIVE_HOPS, 0.0), **model,  # 0 for a hop not on this request's path
            "end to end": through_mesh, "no mesh": straight,
        })
    return rows


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    """The median of each key over the rows of :func:`measure_path`."""
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def model_server_pids(cluster: LocalCluster) -> list[int]:
    """The pids of every model-server pod of every InferenceService in the cluster (to check
    that closing the cluster stopped them)."""
    from labkit.inference.isvc import inference_service

    pids = []
    for obj in cluster.objects():
        if obj.kind == "InferenceService":
            predictor = inference_service(cluster, obj.metadata.name).predictor
            for revision in predictor.revisions.values() if predictor else ():
                pids += [pid for pod in list(revision.pods) if (pid := pod.pid)]
    return pids
