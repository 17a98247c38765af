"""Shared pieces of the live mesh tests: the workloads they run and small HTTP helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane
from labkit.mesh.proxy import Sidecar
from labkit.mesh.security import WorkloadCertificate

FLAKY_APP = Path(__file__).with_name("mesh_flaky_app.py")

WORKLOADS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{istio-injection: enabled}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: httpbin}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  template:
    metadata: {{labels: {{app: httpbin, version: v1}}}}
    spec:
      containers: [{{name: httpbin, image: labkit/httpbin}}]
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin}}
spec:
  selector: {{app: httpbin}}
  ports: [{{port: 8000, name: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: flaky}}
spec:
  selector: {{matchLabels: {{app: flaky}}}}
  template:
    metadata: {{labels: {{app: flaky}}}}
    spec:
      containers: [{{name: flaky, image: flaky, command: ["{sys.executable}", "{FLAKY_APP}"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: flaky}}
spec:
  selector: {{app: flaky}}
  ports: [{{port: 80, name: http}}]
"""


def meshed(*manifests: str) -> Iterator[LocalCluster]:
    """A cluster running WORKLOADS and then `manifests`, closed when the generator is: a
    module fixture does `yield from meshed(...)`."""
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(WORKLOADS)
        for manifest in manifests:
            cluster.apply(manifest)
        yield cluster


@contextmanager
def applied(cluster: LocalCluster, manifest: str) -> Iterator[None]:
    """Apply mesh configuration for one test and remove it afterwards."""
    resources = cluster.apply(manifest)
    try:
        yield
    finally:
        for resource in reversed(resources):
            obj = resource.object
            cluster.delete(f"{obj.api_version}/{obj.kind}", obj.metadata.name, obj.metadata.namespace)


def get(sidecar: Sidecar, path: str, host: str = "httpbin:8000", **kw: Any) -> httpx.Response:
    """GET through a sidecar's outbound listener, addressed by service name."""
    headers = {"host": host, **kw.pop("headers", {})}
    return httpx.get(sidecar.outbound_url + path, headers=headers, timeout=30, **kw)


def echoed_headers(response: httpx.Response) -> dict[str, str]:
    """The request headers httpbin saw (it title-cases names, as httpbin.org does)."""
    return {k.lower(): v for k, v in response.json()["headers"].items()}


def one_route(host: str, **route: str) -> str:
    """A VirtualService sending all of `host`'s HTTP traffic to it, with these fields on that
    route (YAML flow values: ``fault="{abort: ...}"``, ``retries=...``, ``timeout="0.3s"``), so
    a test shows only the behaviour it configures."""
    fields = "".join(f"\n    {name}: {value}" for name, value in route.items())
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]{fields}
"""


def traffic_policy(host: str, **policy: str) -> str:
    """A DestinationRule giving `host` this trafficPolicy (YAML flow values by field name)."""
    fields = "".join(f"\n    {name}: {value}" for name, value in policy.items())
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy:{fields}
"""


def versioned(app: str, port: int, replicas: dict[str, int]) -> str:
    """A Service `app` on `port` over one Deployment `app-VERSION` per version (labels `app` and
    `version`, Istio's subset and telemetry labels), each running labkit/hello answering
    "Hello VERSION!", with that many replicas."""
    deployments = "".join(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}-{version}}}
spec:
  replicas: {count}
  selector: {{matchLabels: {{app: {app}, version: {version}}}}}
  template:
    metadata: {{labels: {{app: {app}, version: {version}}}}}
    spec:
      containers: [{{name: {app}, image: labkit/hello, env: [{{name: TARGET, value: {version}}}]}}]
---""" for version, count in replicas.items())
    return f"""{deployments}
apiVersion: v1
kind: Service
metadata: {{name: {app}}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: {port}, name: http}}]
"""


def identity(cluster: LocalCluster, workload: str, namespace: str = "default") -> str:
    """The SPIFFE identity a workload's sidecar presents (its certificate's URI SAN)."""
    tls = control_plane(cluster).sidecar(workload, namespace).tls
    assert isinstance(tls, WorkloadCertificate), f"{namespace}/{workload}'s sidecar has no mutual-TLS certificate"
    return str(tls.identity)
