"""The Service controller: a kube-proxy-style TCP balancer per Service port.

Endpoints are the ready pods in the Service's namespace whose labels match its selector; they
are recomputed whenever the cluster's pods change, so a Service applied before its Deployment
starts forwarding as soon as the pods are ready.

`service_links()` is the kubelet's other discovery mechanism: the environment variables every
container gets for the Services that exist in its namespace when it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from labkit.core.balancer import L4Balancer
from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.models import Service
from labkit.net import HOST

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ServiceController", "link_variables", "service_links"]


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def link_variables(service: Service, local_ports: Mapping[int, int], host: str = HOST) -> dict[str, str]:
    """The variables the kubelet sets for one Service, as pkg/kubelet/envvars does.

    For Service `backend` with port 9080 named `http`: BACKEND_SERVICE_HOST,
    BACKEND_SERVICE_PORT (the first port), BACKEND_SERVICE_PORT_HTTP (each named port), and the
    Docker-links set BACKEND_PORT (first port), BACKEND_PORT_9080_TCP, ..._PROTO, ..._PORT,
    ..._ADDR. Locally the address is `host` and each port the Service's local balancer port
    (`local_ports` by in-cluster port); names keep the in-cluster port numbers, so an app reads
    the same variable names as on a real cluster.
    """
    prefix = _env_name(service.metadata.name)
    ports = service.spec.ports
    env = {
        f"{prefix}_SERVICE_HOST": host,
        f"{prefix}_SERVICE_PORT": str(local_ports[ports[0].port]),
    }
    for port in ports:
        if port.name:
            env[f"{prefix}_SERVICE_PORT_{_env_name(port.name)}"] = str(local_ports[port.port])
    for i, port in enumerate(ports):
        proto = port.protocol.lower()
        url = f"{proto}://{host}:{local_ports[port.port]}"
        if i == 0:
            env[f"{prefix}_PORT"] = url
        links = f"{prefix}_PORT_{port.port}_{port.protocol.upper()}"
        env[links] = url
        env[f"{links}_PROTO"] = proto
        env[f"{links}_PORT"] = str(local_ports[port.port])
        env[f"{links}_ADDR"] = host
    return env


def service_links(cluster: LocalCluster, namespace: str) -> dict[str, str]:
    """Link variables for every v1 Service in `namespace` now (later ones are not seen: a
    container only learns the Services that existed when it started, as in Kubernetes)."""
    env: dict[str, str] = {}
    for obj in cluster.objects():
        if isinstance(obj, Service) and obj.metadata.namespace == namespace:
            status = cluster.get("v1/Service", obj.metadata.name, namespace).status
            local = {p["port"]: urlsplit(p["url"]).port for p in status.detail["ports"]}
            env.update(link_variables(obj, local))
    return env


class ServiceController:
    def __init__(self, cluster: LocalCluster, obj: Service) -> None:
        self.cluster = cluster
        self.obj: Service | None = None
        self.balancers: dict[int, L4Balancer] = {}
        """Local balancer by the Service's in-cluster port number."""
        self._unsubscribe: Callable[[], None] | None = None

    def apply(self, obj: Service) -> None:
        wanted = [port.port for port in obj.spec.ports]
        started: list[L4Balancer] = []
        try:
            for number in wanted:
                if number not in self.balancers:
                    balancer = L4Balancer(self.cluster.loop)
                    balancer.start()
                    started.append(balancer)
                    self.balancers[number] = balancer
        except BaseException:
            for balancer in started:
                balancer.close()
            self.balancers = {n: b for n, b in self.balancers.items() if b not in started}
            raise
        for number in [n for n in self.balancers if n not in wanted]:
            self.balancers.pop(number).close()
        # Keep the spec's port order so url() is the first port's address.
        self.balancers = {n: self.balancers[n] for n in wanted}
        self.obj = obj
        if self._unsubscribe is None:
            self._unsubscribe = self.cluster.pods.subscribe(self._refresh)
        self._refresh()

    def endpoints(self) -> list[tuple[str, int]]:
        assert self.obj is not None
        pods = self.cluster.pods.select(self.obj.metadata.namespace, self.obj.spec.selector)
        return [(HOST, pod.port) for pod in pods]

    def _refresh(self) -> None:
        if self.obj is None:
            return
        backends = self.endpoints()
        for balancer in self.balancers.values():
            balancer.set_backends(backends)

    def delete(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for balancer in self.balancers.values():
            balancer.close()
        self.balancers = {}

    def status(self) -> ObjectStatus:
        assert self.obj is not None
        urls = tuple(b.url for b in self.balancers.values())
        count = len(self.endpoints())
        return ObjectStatus(
            kind="Service",
            name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace,
            ready=bool(urls),
            url=urls[0] if urls else None,
            urls=urls,
            message=f"{count} endpoint(s)" if count else "no ready endpoints yet",
            detail={
                "ports": [
                    {"port": number, "url": b.url, "connections": sum(b.connections.values())}
                    for number, b in self.balancers.items()
                ],
                "endpoints": [f"http://{h}:{p}" for h, p in self.endpoints()],
            },
        )


register_controller("v1", "Service", ServiceController)
