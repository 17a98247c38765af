"""The core Kubernetes kinds labkit runs: apps/v1 Deployment, v1 Service and v1 ServiceAccount
(a faithful subset).

Field names, defaults and the cross-field rules match the Kubernetes API, so a manifest that
loads here is one a real API server accepts. Fields labkit cannot honour locally are refused
with a message rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from labkit.core.images import image_command, known_images, program_problem
from labkit.core.probes import TCP_READY, ProbeSpec, probe_spec
from labkit.core.resources import ResourceRequirements
from labkit.manifests import (
    CONTAINER_IGNORED,
    DEPLOYMENT_IGNORED,
    POD_IGNORED,
    FieldPath,
    IntOrString,
    KubeModel,
    KubeObject,
    dns_label_problem,
    dns_subdomain_problem,
    label_problems,
    register_kind,
)

__all__ = [
    "Container",
    "ContainerPort",
    "Deployment",
    "DeploymentSpec",
    "EnvVar",
    "HTTPGetAction",
    "LabelSelector",
    "PodSpec",
    "PodTemplateSpec",
    "Probe",
    "Service",
    "ServiceAccount",
    "ServicePort",
    "ServiceSpec",
    "TCPSocketAction",
    "TemplateMeta",
]

PortProtocol = Literal["TCP", "UDP", "SCTP"]
PortNumber = Field(ge=1, le=65535)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class LabelSelector(KubeModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class TemplateMeta(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(KubeModel):
    name: str
    value: str = ""


class ContainerPort(KubeModel):
    container_port: int = PortNumber
    name: str | None = None
    protocol: PortProtocol = "TCP"


class HTTPGetAction(KubeModel):
    path: str = "/"
    port: IntOrString
    scheme: Literal["HTTP"] = "HTTP"


class TCPSocketAction(KubeModel):
    port: IntOrString


class Probe(KubeModel):
    """httpGet or tcpSocket, run on the replica's $PORT whatever `port` says (a local pod has
    that one port); the timing fields as in Kubernetes (see labkit.core.probes)."""

    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int = Field(default=10, ge=1)
    timeout_seconds: int = Field(default=1, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)


def handler_problem(probe: Probe | object) -> str | None:
    """Kubernetes' rule: a probe names exactly one handler (validation.go, validateHandler)."""
    handlers = [name for name, attr in (("httpGet", "http_get"), ("tcpSocket", "tcp_socket"))
                if getattr(probe, attr, None) is not None]
    if len(handlers) == 1:
        return None
    if not handlers:
        return "must specify a handler type: httpGet or tcpSocket (exec and grpc are not run)"
    return f"may not specify more than 1 handler type, got {' and '.join(handlers)}"


class Container(KubeModel):
    ignored_fields = CONTAINER_IGNORED

    name: str
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    resources: ResourceRequirements | None = None  # requests.cpu: a HorizontalPodAutoscaler's denominator

    @property
    def readiness(self) -> ProbeSpec:
        """The readiness check: the readinessProbe, or a TCP connect to the port."""
        return probe_spec(self.readiness_probe, TCP_READY) or TCP_READY

    @property
    def liveness(self) -> ProbeSpec | None:
        return probe_spec(self.liveness_probe)

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        if problem := dns_label_problem(self.name):
            yield path + ("name",), problem
        for field, probe in (("readinessProbe", self.readiness_probe),
                             ("livenessProbe", self.liveness_probe)):
            if probe is not None and (problem := handler_problem(probe)):
                yield path + (field,), problem
        if not self.command and image_command(self.image) is None:
            yield (
                path + ("image",),
                (
                    f"image {self.image!r} is not a built-in image (built-in: "
                    f"{', '.join(known_images())}) and no command is set: add "
                    "command: [...] to run a local program"
                ),
            )
        elif problem := program_problem(self.image, self.command, self.args):
            yield path + ("command",), problem
        for i, var in enumerate(self.env):
            if not _ENV_NAME.match(var.name):
                yield (
                    path + ("env", i, "name"),
                    (
                        f"invalid environment variable name {var.name!r}: use letters, digits, "
                        "'_', '-' or '.', not starting with a digit"
                    ),
                )
        seen: set[int] = set()
        for i, port in enumerate(self.ports):
            if port.container_port in seen:
                yield path + ("ports", i, "containerPort"), f"duplicate port {port.container_port}"
            seen.add(port.container_port)


class PodSpec(KubeModel):
    """The pod-level fields labkit honours.

    `serviceAccountName` is the pod's identity (Kubernetes' `default` when unset): the mesh
    issues its certificate to `spiffe://cluster.local/ns/<ns>/sa/<name>`. As under Kubernetes'
    ServiceAccount admission, pods are only created once that ServiceAccount exists.
    `automountServiceAccountToken` is accepted for fidelity; labkit mounts no token either way.
    `enableServiceLinks` (default true) makes the kubelet set `<NAME>_SERVICE_HOST`, `..._PORT`
    and the Docker-links variables for every Service in the namespace when a container starts.
    """

    ignored_fields = POD_IGNORED

    containers: list[Container] = Field(min_length=1)
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    enable_service_links: bool = True

    @property
    def service_account(self) -> str:
        return self.service_account_name or "default"

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        name = self.service_account_name
        if name is not None and (problem := dns_subdomain_problem(name)):
            yield path + ("serviceAccountName",), problem
        for i, container in enumerate(self.containers):
            yield from container.problems(path + ("containers", i))


class PodTemplateSpec(KubeModel):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


class DeploymentSpec(KubeModel):
    ignored_fields = DEPLOYMENT_IGNORED

    replicas: int = Field(default=1, ge=0)
    selector: LabelSelector
    template: PodTemplateSpec


class Deployment(KubeObject):
    """apps/v1 Deployment: `replicas` processes of the template's (single) container."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec

    @property
    def container(self) -> Container:
        return self.spec.template.spec.containers[0]

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        selector = self.spec.selector.match_labels
        labels = self.spec.template.metadata.labels
        yield from label_problems(selector, ("spec", "selector", "matchLabels"))
        yield from label_problems(labels, ("spec", "template", "metadata", "labels"))
        if not selector:
            yield (
                ("spec", "selector"),
                "empty selector is invalid for a Deployment: set matchLabels",
            )
        elif any(labels.get(k) != v for k, v in selector.items()):
            wanted = ", ".join(f"{k}: {v}" for k, v in selector.items())
            yield (
                ("spec", "template", "metadata", "labels"),
                (
                    f"selector does not match template labels: every spec.selector.matchLabels "
                    f"entry ({wanted}) must appear here, or Kubernetes rejects the Deployment"
                ),
            )
        containers = self.spec.template.spec.containers
        if len(containers) > 1:
            yield (
                ("spec", "template", "spec", "containers"),
                (f"labkit runs one container per pod, found {len(containers)}"),
            )
        yield from self.spec.template.spec.problems(("spec", "template", "spec"))


class ServicePort(KubeModel):
    name: str | None = None
    protocol: PortProtocol = "TCP"
    port: int = PortNumber
    target_port: IntOrString | None = None


class ServiceSpec(KubeModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(min_length=1)


class Service(KubeObject):
    """v1 Service: a stable address spreading connections over the selected pods.

    Locally each spec.ports[] entry gets its own free port on 127.0.0.1 (the `port` number is the
    in-cluster one), forwarding to the pods' $PORT.
    """

    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec

    name_rule = "label1035"

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        yield from label_problems(self.spec.selector, ("spec", "selector"))
        ports = self.spec.ports
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(ports):
            path = ("spec", "ports", i)
            if port.protocol != "TCP":
                yield path + ("protocol",), f"labkit forwards TCP only, got {port.protocol!r}"
            if len(ports) > 1 and not port.name:
                yield path, "a name is required when a Service has more than one port"
            if port.name:
                if problem := dns_label_problem(port.name):
                    yield path + ("name",), problem
                if port.name in names:
                    yield path + ("name",), f"duplicate port name {port.name!r}"
                names.add(port.name)
            if port.port in numbers:
                yield path + ("port",), f"duplicate port {port.port}"
            numbers.add(port.port)
            target = port.target_port
            if isinstance(target, int) and not 1 <= target <= 65535:
                yield path + ("targetPort",), f"must be between 1 and 65535, got {target}"
            if isinstance(target, str) and (len(target) > 15 or not _PORT_NAME.match(target)):
                yield (
                    path + ("targetPort",),
                    (f"invalid port name {target!r}: at most 15 lowercase letters, digits and '-'"),
                )


class ServiceAccount(KubeObject):
    """v1 ServiceAccount: a name pods run as. Kubernetes creates `default` in every namespace;
    any other must be applied before pods name it (ServiceAccount admission refuses them)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    automount_service_account_token: bool | None = None


register_kind("apps/v1", "Deployment", Deployment)
register_kind("v1", "ServiceAccount", ServiceAccount)
register_kind("v1", "Service", Service)
