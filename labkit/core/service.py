"""The Service controller: a kube-proxy-style TCP balancer per Service port.

Endpoints are the ready pods in the Service's namespace whose labels match its selector; they
are recomputed whenever the cluster's pods change, so a Service applied before its Deployment
starts forwarding as soon as the pods are ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from labkit.core.balancer import L4Balancer
from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.models import Service
from labkit.net import HOST

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ServiceController"]


class ServiceController:
    def __init__(self, cluster: "LocalCluster", obj: Service) -> None:
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
