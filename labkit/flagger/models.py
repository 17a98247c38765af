"""Flagger's Canary and MetricTemplate kinds (flagger.app/v1beta1), the subset labkit runs.

Field names and defaults follow Flagger's CRD (/work/shared/crds/flagger/crd.yaml) and its Go
types (fluxcd/flagger pkg/apis/flagger/v1beta1/canary.go: GetAnalysisInterval defaults to 60s,
GetAnalysisThreshold to 1, GetProgressDeadlineSeconds to 600, GetMetricInterval to 1m).
`problems()` adds what Flagger only finds out at run time (a step larger than the maximum, a
range whose min exceeds its max, a metric that is neither built in nor has a template), so the
mistake is reported with its field path before anything starts. Whether the target and the
templates exist is checked against the cluster when the Canary is applied (controller.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Literal

from pydantic import Field

from labkit.manifests import FieldPath, KubeModel, KubeObject
from labkit.mesh import spec as meshspec

__all__ = [
    "API_VERSION",
    "BUILTIN_METRICS",
    "WEBHOOK_TYPES",
    "Canary",
    "CanaryAnalysis",
    "CanaryMetric",
    "CanaryService",
    "CanarySpec",
    "CanaryWebhook",
    "MetricTemplate",
    "TargetRef",
    "ThresholdRange",
    "go_duration",
]

API_VERSION: Final = "flagger.app/v1beta1"

BUILTIN_METRICS = ("request-success-rate", "request-duration")
"""Metrics Flagger computes from the mesh's own telemetry without a MetricTemplate."""

WEBHOOK_TYPES = ("", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion",
                 "post-rollout", "event", "rollback", "confirm-traffic-increase")
"""The CRD's enum for analysis.webhooks[].type ("" means rollout)."""

_TARGETS = {"istio": ("apps/v1", "Deployment"), "knative": ("serving.knative.dev/v1", "Service")}


def go_duration(value: str, path: FieldPath) -> float:
    """A Go duration ("30s", "1m", "500ms") in seconds; a bad one raises ValueError naming `path`."""
    try:
        return meshspec.duration(value, ".".join(str(p) for p in path), default=0.0)
    except meshspec.SpecError as exc:
        raise ValueError(exc.reason) from None


class TargetRef(KubeModel):
    api_version: str | None = None
    kind: str
    name: str


class CanaryService(KubeModel):
    """spec.service: the ports and the Istio routing options Flagger copies into its
    VirtualService (retries, timeout) and DestinationRules (trafficPolicy)."""

    name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    port_name: str | None = None
    target_port: int | str | None = None
    port_discovery: bool | None = None
    gateways: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    traffic_policy: dict[str, Any] | None = None
    retries: dict[str, Any] | None = None
    timeout: str | None = None


class ThresholdRange(KubeModel):
    min: float | None = None
    max: float | None = None


class TemplateRef(KubeModel):
    name: str
    namespace: str | None = None


class CanaryMetric(KubeModel):
    name: str
    interval: str | None = None
    threshold: float | None = None
    threshold_range: ThresholdRange | None = None
    query: str | None = None
    template_ref: TemplateRef | None = None
    template_variables: dict[str, str] = Field(default_factory=dict)


class CanaryWebhook(KubeModel):
    name: str
    type: Literal["", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion",
                  "post-rollout", "event", "rollback", "confirm-traffic-increase"] = ""
    url: str
    timeout: str | None = None
    retries: int | None = Field(default=None, ge=0)
    mute_alert: bool | None = None
    disable_tls: bool | None = Field(default=None, alias="disableTLS")
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The hook's type with Flagger's default: an untyped webhook is a rollout check."""
        return self.type or "rollout"


class CanaryAnalysis(KubeModel):
    interval: str | None = None
    iterations: int | None = Field(default=None, ge=0)
    threshold: int | None = Field(default=None, ge=0)
    max_weight: int | None = Field(default=None, ge=0, le=100)
    step_weight: int | None = Field(default=None, ge=0, le=100)
    step_weights: list[int] = Field(default_factory=list)
    step_weight_promotion: int | None = Field(default=None, ge=0, le=100)
    mirror: bool | None = None
    mirror_weight: int | None = Field(default=None, ge=0, le=100)
    primary_ready_threshold: int | None = Field(default=None, ge=0, le=100)
    canary_ready_threshold: int | None = Field(default=None, ge=0, le=100)
    match: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[CanaryMetric] = Field(default_factory=list)
    webhooks: list[CanaryWebhook] = Field(default_factory=list)

    @property
    def interval_seconds(self) -> float:
        """How often Flagger runs one analysis step (default 1m)."""
        return go_duration(self.interval, ("spec", "analysis", "interval")) if self.interval else 60.0

    @property
    def threshold_value(self) -> int:
        """Failed checks before rollback (Flagger: unset or 0 means 1)."""
        return self.threshold or 1


class CanarySpec(KubeModel):
    provider: str | None = None
    metrics_server: str | None = None
    progress_deadline_seconds: int | None = Field(default=None, ge=0)
    target_ref: TargetRef
    service: CanaryService = Field(default_factory=CanaryService)
    skip_analysis: bool = False
    revert_on_deletion: bool = False
    suspend: bool = False
    analysis: CanaryAnalysis

    @property
    def deadline_seconds(self) -> float:
        return float(self.progress_deadline_seconds if self.progress_deadline_seconds is not None
                     else 600)


class Canary(KubeObject):
    """A Canary: progressive delivery of `targetRef` judged by `analysis`."""

    api_version: Literal["flagger.app/v1beta1"] = API_VERSION
    kind: Literal["Canary"] = "Canary"
    spec: CanarySpec

    @property
    def provider(self) -> str:
        return self.spec.provider or "istio"

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        spec, a = self.spec, self.spec.analysis
        provider = self.provider
        if provider not in _TARGETS:
            yield ("spec", "provider"), (
                f"labkit runs Flagger's 'istio' and 'knative' providers, got {provider!r}")
        else:
            api_version, kind = _TARGETS[provider]
            ref = spec.target_ref
            if ref.kind != kind or (ref.api_version or api_version) != api_version:
                yield ("spec", "targetRef"), (
                    f"provider {provider!r} takes a {api_version} {kind} target, "
                    f"got {ref.api_version or '(no apiVersion)'} {ref.kind}")
            if provider == "istio" and spec.service.port is None:
                yield ("spec", "service", "port"), (
                    "required for provider istio: the port of the ClusterIP services "
                    "Flagger creates")
        yield from _analysis_problems(a)


def _analysis_problems(a: CanaryAnalysis) -> Iterator[tuple[FieldPath, str]]:
    base: FieldPath = ("spec", "analysis")
    if a.interval is not None:
        try:
            if go_duration(a.interval, base + ("interval",)) <= 0:
                yield base + ("interval",), f"must be a positive duration, got {a.interval!r}"
        except ValueError as exc:
            yield base + ("interval",), str(exc)
    steps = a.step_weights
    for i, step in enumerate(steps):
        if not 1 <= step <= 100:
            yield base + ("stepWeights", i), f"must be between 1 and 100, got {step}"
        elif i and step <= steps[i - 1]:
            yield base + ("stepWeights", i), (
                f"must be larger than the step before ({steps[i - 1]}): weights only go up")
    if a.step_weight and a.max_weight and a.step_weight > a.max_weight:
        yield base + ("stepWeight",), (
            f"stepWeight {a.step_weight} is larger than maxWeight {a.max_weight}: the first "
            "step would already pass the maximum")
    if not (a.iterations or a.step_weight or steps):
        yield base, ("set stepWeight (or stepWeights) for a canary, or iterations for "
                     "A/B testing or blue/green: with none of them Flagger never advances")
    if a.match and not a.iterations:
        yield base + ("iterations",), "A/B testing (analysis.match) needs iterations"
    if a.mirror_weight is not None and not a.mirror:
        yield base + ("mirrorWeight",), "mirrorWeight needs mirror: true"
    for i, m in enumerate(a.metrics):
        path = base + ("metrics", i)
        if m.name not in BUILTIN_METRICS and m.template_ref is None and m.query is None:
            yield path + ("templateRef",), (
                f"metric {m.name!r} is not built in ({', '.join(BUILTIN_METRICS)}): "
                "give it a templateRef to a MetricTemplate")
        if m.interval is not None:
            try:
                go_duration(m.interval, path + ("interval",))
            except ValueError as exc:
                yield path + ("interval",), str(exc)
        r = m.threshold_range
        if r is None and m.threshold is None:
            yield path, "set thresholdRange (min and/or max) or threshold"
        if r is not None:
            if r.min is None and r.max is None:
                yield path + ("thresholdRange",), "set min, max or both"
            if r.min is not None and r.max is not None and r.min > r.max:
                yield path + ("thresholdRange",), f"min {r.min:g} is larger than max {r.max:g}"
            if m.name == "request-success-rate":
                for side in ("min", "max"):
                    v = getattr(r, side)
                    if v is not None and not 0 <= v <= 100:
                        yield path + ("thresholdRange", side), (
                            f"request-success-rate is a percentage, 0 to 100; got {v:g}")
            if m.name == "request-duration":
                for side in ("min", "max"):
                    v = getattr(r, side)
                    if v is not None and v < 0:
                        yield path + ("thresholdRange", side), (
                            f"request-duration is in milliseconds, >= 0; got {v:g}")
    names: set[str] = set()
    for i, w in enumerate(a.webhooks):
        path = base + ("webhooks", i)
        if w.name in names:
            yield path + ("name",), f"duplicate webhook name {w.name!r}"
        names.add(w.name)
        if not w.url.startswith(("http://", "https://")):
            yield path + ("url",), f"must be an http:// or https:// URL, got {w.url!r}"
        if w.timeout is not None:
            try:
                go_duration(w.timeout, path + ("timeout",))
            except ValueError as exc:
                yield path + ("timeout",), str(exc)


class ProviderSpec(KubeModel):
    type: str
    address: str | None = None
    secret_ref: dict[str, str] | None = None
    insecure_skip_verify: bool | None = None


class MetricTemplateSpec(KubeModel):
    provider: ProviderSpec
    query: str


class MetricTemplate(KubeObject):
    """A named query (Go template over name, namespace, target, service, ingress, interval)
    evaluated by a metrics provider; labkit evaluates provider `prometheus`."""

    api_version: Literal["flagger.app/v1beta1"] = API_VERSION
    kind: Literal["MetricTemplate"] = "MetricTemplate"
    spec: MetricTemplateSpec

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        if self.spec.provider.type != "prometheus":
            yield ("spec", "provider", "type"), (
                f"labkit evaluates MetricTemplates with provider 'prometheus', "
                f"got {self.spec.provider.type!r}")
        if not self.spec.query.strip():
            yield ("spec", "query"), "must not be empty"

