"""sources.knative.dev/v1 SinkBinding and ContainerSource as pydantic models.

Shapes from knative/eventing `pkg/apis/sources/v1/sinkbinding_types.go` and
`containersource_types.go` (both embed duckv1.SourceSpec: `sink` and `ceOverrides`). Rules:
a SinkBinding's `subject` names its object by `name` or by `selector`, never both
(knative.dev/pkg `tracker.Reference.Validate`: "expected exactly one, got both"); a
ContainerSource's `template` is a pod template with at least one container
(`containersource_validation.go`). labkit binds what it runs: apps/v1 Deployments and Knative
Services (PodSpecable subjects); Jobs and CronJobs are refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from labkit.core.models import LabelSelector, PodTemplateSpec
from labkit.eventing.models import CloudEventOverrides, Destination
from labkit.manifests import FieldPath, KubeModel, KubeObject

__all__ = ["BINDABLE", "ContainerSource", "SinkBinding", "Subject"]

BINDABLE = (("apps/v1", "Deployment"), ("serving.knative.dev/v1", "Service"))
"""The subjects labkit can bind: the PodSpecable kinds it runs."""


class Subject(KubeModel):
    """knative.dev/pkg tracker.Reference: an object by name, or every match of a selector."""

    api_version: str
    kind: str
    namespace: str | None = None
    name: str | None = None
    selector: LabelSelector | None = None

    def matches(self, api_version: str, kind: str, name: str, labels: dict[str, str]) -> bool:
        if (self.api_version, self.kind) != (api_version, kind):
            return False
        if self.name is not None:
            return self.name == name
        wanted = self.selector.match_labels if self.selector is not None else {}
        return all(labels.get(k) == v for k, v in wanted.items())

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        if self.name is not None and self.selector is not None:
            yield path, "expected exactly one, got both: name, selector"
        elif self.name is None and self.selector is None:
            yield path, "expected exactly one, got neither: name, selector"
        elif self.selector is not None and not self.selector.match_labels:
            yield path + ("selector",), "an empty selector would bind every object: set matchLabels"
        if (self.api_version, self.kind) not in BINDABLE:
            kinds = ", ".join(f"{a} {k}" for a, k in BINDABLE)
            yield (path + ("kind",), f"labkit binds {kinds}; got {self.api_version} {self.kind} "
                   "(labkit runs no Jobs or CronJobs)")


class SinkBindingSpec(KubeModel):
    subject: Subject
    sink: Destination
    ce_overrides: CloudEventOverrides | None = None


class SinkBinding(KubeObject):
    """Gives its subject's containers K_SINK (the resolved sink) and K_CE_OVERRIDES."""

    api_version: Literal["sources.knative.dev/v1"] = "sources.knative.dev/v1"
    kind: Literal["SinkBinding"] = "SinkBinding"
    spec: SinkBindingSpec

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        yield from self.spec.subject.problems(("spec", "subject"))
        yield from self.spec.sink.problems(("spec", "sink"))
        if self.spec.ce_overrides is not None:
            yield from self.spec.ce_overrides.problems(("spec", "ceOverrides"))


class ContainerSourceSpec(KubeModel):
    template: PodTemplateSpec
    sink: Destination
    ce_overrides: CloudEventOverrides | None = None


class ContainerSource(KubeObject):
    """A Deployment of the template's container, bound to the sink (K_SINK) by a SinkBinding."""

    api_version: Literal["sources.knative.dev/v1"] = "sources.knative.dev/v1"
    kind: Literal["ContainerSource"] = "ContainerSource"
    spec: ContainerSourceSpec

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        pod = self.spec.template.spec
        if len(pod.containers) > 1:
            yield (("spec", "template", "spec", "containers"),
                   f"labkit runs one container per pod, found {len(pod.containers)}")
        yield from pod.problems(("spec", "template", "spec"))
        yield from self.spec.sink.problems(("spec", "sink"))
        if self.spec.ce_overrides is not None:
            yield from self.spec.ce_overrides.problems(("spec", "ceOverrides"))
