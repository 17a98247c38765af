"""SinkBinding and ContainerSource: a program finds where to send events in K_SINK.

SinkBinding (knative/eventing `pkg/apis/sources/v1/sinkbinding_lifecycle.go`, `Do` and
`Undo`): Knative's webhook mutates the subject's pod template, first removing K_SINK,
K_CE_OVERRIDES and K_CA_CERTS, then appending to every container `K_SINK` = the resolved sink
URL and `K_CE_OVERRIDES` = the JSON of `ceOverrides` (empty when unset). Deleting the binding
undoes it. Here the same happens through labkit's admission hook (`SinkBindingAdmission`, a
cluster extension like the mesh's sidecar injector): every subject that is applied while a
binding selects it gets the variables, and applying or deleting a binding re-applies its
subjects, so a Deployment rolls out new pods and a Knative Service makes a new revision, as
on a cluster. K_CA_CERTS is never set (labkit's sinks are plain HTTP).

ContainerSource (`pkg/reconciler/containersource/containersource.go` and its `resources`):
Knative creates a Deployment `<name>-deployment` running the template and a SinkBinding
`<name>-sinkbinding` pointing it at the sink. Here the ContainerSource owns that Deployment
(the real Deployment controller: processes, restarts) and gives its container the variables
the SinkBinding would: none while the sink does not resolve, K_SINK once it does (the pods
roll then, and whenever the sink's URL changes).
https://knative.dev/docs/eventing/custom-event-source/containersource/
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from labkit.core.controller import ObjectStatus
from labkit.core.deployment import DeploymentController
from labkit.core.models import Deployment
from labkit.eventing.binding_models import BINDABLE, ContainerSource, SinkBinding
from labkit.eventing.models import CloudEventOverrides
from labkit.eventing.registry import ControllerRegistry, Registered, registry_of, try_resolve
from labkit.manifests import KubeObject

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["BINDING_ENV", "ContainerSourceController", "SinkBindingAdmission",
           "SinkBindingController", "bind", "ce_overrides_value", "unbind"]

BINDING_ENV = ("K_SINK", "K_CE_OVERRIDES", "K_CA_CERTS")
"""The variables `Undo` removes before `Do` adds them again."""

T = TypeVar("T", bound=KubeObject)


def ce_overrides_value(overrides: CloudEventOverrides | None) -> str:
    """K_CE_OVERRIDES: Go's json.Marshal of duckv1.CloudEventOverrides (compact), or ""."""
    if overrides is None:
        return ""
    return json.dumps({"extensions": dict(overrides.extensions)}, separators=(",", ":"))


def _with_env(obj: T, add: dict[str, str]) -> T:
    """`obj` (a PodSpecable: spec.template.spec.containers) without the binding variables,
    then with `add` appended to every container's env."""
    data = obj.model_dump(by_alias=True, exclude_none=True)
    for container in data["spec"]["template"]["spec"]["containers"]:
        env = [var for var in container.get("env", []) if var["name"] not in BINDING_ENV]
        container["env"] = env + [{"name": k, "value": v} for k, v in add.items()]
    return type(obj).model_validate(data)


def bind(obj: T, sink_uri: str, overrides: CloudEventOverrides | None) -> T:
    """SinkBinding.Do: the subject with K_SINK and K_CE_OVERRIDES in every container."""
    return _with_env(obj, {"K_SINK": sink_uri, "K_CE_OVERRIDES": ce_overrides_value(overrides)})


def unbind(obj: T) -> T:
    """SinkBinding.Undo: the subject without the binding variables."""
    return _with_env(obj, {})


# ---------------------------------------------------------------------------------------------
# SinkBinding


@dataclass(eq=False)
class _Bindings(ControllerRegistry):
    bindings: dict[tuple[str, str], SinkBindingController] = field(default_factory=dict)
    closing: bool = False


def _bindings(cluster: LocalCluster) -> _Bindings:
    return registry_of(cluster, _Bindings)


class SinkBindingAdmission:
    """The mutating webhook half: binds each subject as it is applied."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def admit(self, obj: KubeObject) -> KubeObject:
        if (obj.api_version, obj.kind) not in BINDABLE:
            return obj
        registry = _bindings(self.cluster)
        with registry.lock:
            binders = [b for b in registry.bindings.values() if b.selects(obj)]
        for binder in binders:
            # Do() starts with Undo() and stops there when the sink does not resolve.
            obj = (unbind(obj) if binder.sink_uri is None
                   else bind(obj, binder.sink_uri, binder.obj.spec.ce_overrides))
        return obj

    def changed(self) -> None:
        """Bindings follow their subjects through `admit`; nothing else to recompute."""

    def close(self) -> None:
        # Called before the cluster deletes its objects: the subjects go too, so bindings
        # need not re-apply them on the way out.
        _bindings(self.cluster).closing = True


class SinkBindingController(Registered):
    def __init__(self, cluster: LocalCluster, obj: SinkBinding) -> None:
        self.cluster = cluster
        self.obj = obj
        self.sink_uri: str | None = None
        self.problem: str | None = None

    def selects(self, obj: KubeObject) -> bool:
        subject = self.obj.spec.subject
        namespace = subject.namespace or self.obj.metadata.namespace
        return (obj.metadata.namespace == namespace and subject.matches(
            obj.api_version, obj.kind, obj.metadata.name, dict(obj.metadata.labels)))

    def _subjects(self) -> list[KubeObject]:
        return [o for o in self.cluster.objects() if self.selects(o)]

    def _resolve(self) -> None:
        self.sink_uri, problem = try_resolve(self.cluster, self.obj.spec.sink,
                                             self.obj.metadata.namespace)
        self.problem = f"sink: {problem}" if problem else None

    def apply(self, obj: SinkBinding) -> None:
        registry = _bindings(self.cluster)
        before = self._subjects() if self.key in registry.bindings else []
        with registry.lock:
            self.obj = obj
            registry.bindings[self.key] = self
        self._resolve()
        try:
            self._rebind(before)
        except Exception:
            with registry.lock:
                registry.bindings.pop(self.key, None)
            raise

    def _rebind(self, before: list[KubeObject]) -> None:
        """Re-apply the subjects so admission binds them; release those no longer selected."""
        subjects = self._subjects()
        for old in before:
            if not self.selects(old):
                self.cluster.apply(unbind(old))
        for subject in subjects:
            self.cluster.apply(subject)  # admit() adds K_SINK (no change: nothing restarts)

    def reconcile(self) -> None:
        previous = self.sink_uri
        self._resolve()
        if self.sink_uri != previous:  # the sink appeared or moved: roll the subjects
            self._rebind([])

    def delete(self) -> None:
        registry = _bindings(self.cluster)
        with registry.lock:
            registry.bindings.pop(self.key, None)
            closing = registry.closing
        if not closing:
            for subject in self._subjects():
                self.cluster.apply(unbind(subject))

    def status(self) -> ObjectStatus:
        bound = [f"{s.kind}/{s.metadata.name}" for s in self._subjects()]
        problems = [self.problem] if self.problem else []
        if not bound:
            problems.append("no subject matches (yet)")
        return ObjectStatus(
            kind="SinkBinding", name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace, ready=not problems,
            message="; ".join(problems) or f"K_SINK={self.sink_uri} -> {', '.join(bound)}",
            detail={"sinkUri": self.sink_uri, "subjects": bound})


# ---------------------------------------------------------------------------------------------
# ContainerSource


def source_deployment(source: ContainerSource) -> Deployment:
    """The Deployment Knative's ContainerSource reconciler makes (before the binding)."""
    name = source.metadata.name
    labels = {**source.spec.template.metadata.labels,
              "sources.knative.dev/containerSource": name}
    template: dict[str, Any] = source.spec.template.model_dump(by_alias=True, exclude_none=True)
    template.setdefault("metadata", {})["labels"] = labels
    return Deployment.model_validate({
        "metadata": {"name": f"{name}-deployment", "namespace": source.metadata.namespace,
                     "labels": dict(labels)},
        "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                 "template": template}})


class ContainerSourceController:
    def __init__(self, cluster: LocalCluster, obj: ContainerSource) -> None:
        self.cluster = cluster
        self.obj = obj
        self.sink_uri: str | None = None
        self.problem: str | None = None
        self.deployment: DeploymentController | None = None

    def _resolve(self) -> None:
        self.sink_uri, problem = try_resolve(self.cluster, self.obj.spec.sink,
                                             self.obj.metadata.namespace)
        self.problem = f"sink: {problem}" if problem else None

    def _run(self) -> None:
        # Knative creates the Deployment at once; its SinkBinding adds K_SINK only once the
        # sink resolves (until then the program runs without one), and rolls the pods when the
        # sink's address changes.
        deployment = source_deployment(self.obj)
        bound = (unbind(deployment) if self.sink_uri is None
                 else bind(deployment, self.sink_uri, self.obj.spec.ce_overrides))
        controller = self.deployment or DeploymentController(self.cluster, bound)
        controller.apply(bound)
        self.deployment = controller

    def apply(self, obj: ContainerSource) -> None:
        self.obj = obj
        self._resolve()
        self._run()

    def reconcile(self) -> None:
        previous = self.sink_uri
        self._resolve()
        if self.sink_uri != previous:
            self._run()
        if self.deployment is not None:
            self.deployment.reconcile()  # restart crashed pods, as for any Deployment

    def delete(self) -> None:
        if self.deployment is not None:
            self.deployment.delete()
            self.deployment = None

    def status(self) -> ObjectStatus:
        deployment = self.deployment.status() if self.deployment is not None else None
        problems = [self.problem] if self.problem else []
        if deployment is not None and not deployment.ready:
            problems.append(deployment.message)
        return ObjectStatus(
            kind="ContainerSource", name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace,
            ready=deployment is not None and not problems,
            urls=deployment.urls if deployment is not None else (),
            message="; ".join(problems) or f"{self.obj.metadata.name}-deployment -> {self.sink_uri}",
            detail={"sinkUri": self.sink_uri,
                    "deployment": f"{self.obj.metadata.name}-deployment",
                    "pods": deployment.detail.get("pods") if deployment is not None else []})
