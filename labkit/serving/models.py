"""Knative Serving's API objects (serving.knative.dev/v1), the subset labkit runs faithfully.

A user writes a `KnativeService`; Knative's Service reconciler turns it into a
`Configuration` (the template) and a `Route` (the traffic block), and the Configuration stamps
out immutable `Revision`s. Only the Service is applied by users here; the other three are
built by the controllers and shown as status objects (and exported by `expand`).

`KnativeService.problems()` carries the checks of Knative's admission webhook that do not
need the cluster: traffic percents sum to 100, tags unique DNS-1035 labels, `revisionName`
xor `latestRevision`, a revision name prefixed with the Service name, containerConcurrency
0..1000, timeoutSeconds 0..600 (responseStartTimeoutSeconds and idleTimeoutSeconds at most the
timeout, `labkit.serving.timeouts`), one container with at most one port (and none of the ports
the queue-proxy reserves) and the autoscaling annotations (through `autoscaler_config`).
Whether a named revision exists is checked when the Service is applied.

Followed: knative/serving ``pkg/apis/serving/v1/{service,configuration,revision,route}_types.go``
and ``*_validation.go`` per /work/shared/reference/knative-revisions-traffic.md (commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944); the messages are labkit's own.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from labkit.core.images import image_command, known_images
from labkit.core.models import EnvVar, PortProtocol, handler_problem
from labkit.core.probes import TCP_READY, ProbeSpec, probe_spec
from labkit.core.resources import ResourceRequirements
from labkit.manifests import (
    CONTAINER_IGNORED,
    POD_IGNORED,
    FieldPath,
    IntOrString,
    KubeModel,
    KubeObject,
    dns_label_problem,
    label_problems,
)
from labkit.serving.autoscaler_config import AutoscalerConfig, annotation_errors
from labkit.serving.progress_deadline import PROGRESS_DEADLINE, revision_progress_deadline
from labkit.serving.rollout_duration import ROLLOUT_DURATION, rollout_duration
from labkit.serving.timeouts import (
    KNATIVE_DEFAULTS,
    RequestTimeouts,
    revision_timeouts,
    spec_problems,
)
from labkit.suggest import did_you_mean

__all__ = [
    "API_VERSION",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_CONTAINER_CONCURRENCY",
    "MAX_TIMEOUT_SECONDS",
    "RESERVED_PORTS",
    "Addressable",
    "Condition",
    "Configuration",
    "ConfigurationStatus",
    "KnativeContainer",
    "KnativeService",
    "Revision",
    "RevisionSpec",
    "RevisionStatus",
    "RevisionTemplate",
    "Route",
    "RouteSpec",
    "RouteStatus",
    "RouteTable",
    "ServiceSpec",
    "ServiceStatus",
    "TrafficTarget",
    "resolve_traffic",
]

API_VERSION: Final = "serving.knative.dev/v1"
MAX_CONTAINER_CONCURRENCY = 1000
"""config-defaults ``container-concurrency-max-limit``."""
MAX_TIMEOUT_SECONDS = KNATIVE_DEFAULTS.max_revision_timeout_seconds
"""config-defaults ``max-revision-timeout-seconds``."""
DEFAULT_TIMEOUT_SECONDS = KNATIVE_DEFAULTS.revision_timeout_seconds
"""config-defaults ``revision-timeout-seconds``."""
RESERVED_PORTS = (8012, 8013, 8022, 9090, 9091)
"""The queue-proxy's ports in every pod: a user container may not listen on them."""
_PERMISSIVE_CONFIG = AutoscalerConfig(allow_zero_initial_scale=True)
"""Rules that depend on the cluster's config-autoscaler (initial-scale 0, max-scale-limit)
are checked again when the Service is applied, with the cluster's settings."""
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class KnativeHTTPGet(KubeModel):
    """Knative probes the user container on its own port, so `port` is optional."""

    path: str = "/"
    port: IntOrString | None = None
    scheme: Literal["HTTP"] = "HTTP"


class KnativeTCPSocket(KubeModel):
    port: IntOrString | None = None


class KnativeProbe(KubeModel):
    """httpGet or tcpSocket on the user container's port, timed as labkit.core.probes says."""

    http_get: KnativeHTTPGet | None = None
    tcp_socket: KnativeTCPSocket | None = None
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int = Field(default=0, ge=0)
    timeout_seconds: int = Field(default=1, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)


class KnativePort(KubeModel):
    container_port: int = Field(default=8080, ge=1, le=65535)
    name: Literal["http1", "h2c"] | None = None
    protocol: PortProtocol = "TCP"


class KnativeContainer(KubeModel):
    """A revision's container. The image is a built-in labkit app, or `command` is run."""

    ignored_fields = CONTAINER_IGNORED

    name: str | None = None
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[KnativePort] = Field(default_factory=list)
    readiness_probe: KnativeProbe | None = None
    liveness_probe: KnativeProbe | None = None
    resources: ResourceRequirements | None = None  # requests.cpu: the HPA class's denominator

    @property
    def readiness(self) -> ProbeSpec:
        """The readiness check: the readinessProbe, or Knative's default TCP probe."""
        return probe_spec(self.readiness_probe, TCP_READY) or TCP_READY

    @property
    def liveness(self) -> ProbeSpec | None:
        return probe_spec(self.liveness_probe)

    @property
    def ready_path(self) -> str:
        probe = self.readiness_probe
        return probe.http_get.path if probe and probe.http_get else "/"

    @property
    def container_port(self) -> int:
        return self.ports[0].container_port if self.ports else 8080

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        if self.name is not None and (problem := dns_label_problem(self.name)):
            yield path + ("name",), problem
        if not self.image:
            yield path + ("image",), "an image is required"
        elif not self.command and image_command(self.image) is None:
            yield (
                path + ("image",),
                f"image {self.image!r} is not a built-in image (built-in: "
                f"{', '.join(known_images())}) and no command is set: add command: [...] to "
                "run a local program",
            )
        for i, var in enumerate(self.env):
            if not _ENV_NAME.match(var.name):
                yield (
                    path + ("env", i, "name"),
                    f"invalid environment variable name {var.name!r}: use letters, digits, "
                    "'_', '-' or '.', not starting with a digit",
                )
        if len(self.ports) > 1:
            yield path + ("ports",), "more than one container port is set (Knative allows one)"
        for i, port in enumerate(self.ports):
            if port.container_port in RESERVED_PORTS:
                yield (
                    path + ("ports", i, "containerPort"),
                    f"port {port.container_port} is reserved for the queue-proxy "
                    f"(reserved: {', '.join(map(str, RESERVED_PORTS))})",
                )
        for field, probe in (("readinessProbe", self.readiness_probe),
                             ("livenessProbe", self.liveness_probe)):
            if probe is None:
                continue
            if problem := handler_problem(probe):
                yield path + (field,), problem
            for handler, action in (("httpGet", probe.http_get), ("tcpSocket", probe.tcp_socket)):
                if action is not None and action.port not in (None, self.container_port):
                    yield (
                        path + (field, handler, "port"),
                        f"may only probe the container port {self.container_port}, got "
                        f"{action.port!r}",
                    )


class RevisionSpec(KubeModel):
    ignored_fields = POD_IGNORED

    container_concurrency: int | None = None
    timeout_seconds: int | None = None
    response_start_timeout_seconds: int | None = None
    idle_timeout_seconds: int | None = None
    containers: list[KnativeContainer] = Field(min_length=1)

    @property
    def container(self) -> KnativeContainer:
        return self.containers[0]

    @property
    def concurrency_limit(self) -> int:
        """containerConcurrency with its default (0: no limit)."""
        return self.container_concurrency or 0

    @property
    def timeouts(self) -> RequestTimeouts:
        """The three request limits as Knative's defaulting webhook fills them in."""
        return revision_timeouts(self.timeout_seconds, self.response_start_timeout_seconds,
                                 self.idle_timeout_seconds)

    @property
    def timeout(self) -> int:
        """timeoutSeconds with its default (unset or 0: revision-timeout-seconds)."""
        return int(self.timeouts.timeout)

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        cc = self.container_concurrency
        if cc is not None and not 0 <= cc <= MAX_CONTAINER_CONCURRENCY:
            yield (
                path + ("containerConcurrency",),
                f"expected 0 <= {cc} <= {MAX_CONTAINER_CONCURRENCY}",
            )
        for name, message in spec_problems(self.timeout_seconds,
                                           self.response_start_timeout_seconds,
                                           self.idle_timeout_seconds):
            yield path + (name,), message
        if len(self.containers) > 1:
            yield (
                path + ("containers",),
                f"labkit runs one container per revision, found {len(self.containers)}",
            )
        for i, container in enumerate(self.containers):
            yield from container.problems(path + ("containers", i))


class TemplateMetadata(KubeModel):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RevisionTemplate(KubeModel):
    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    spec: RevisionSpec


class TrafficTarget(KubeModel):
    """One entry of a traffic block (spec), or of a resolved one (status, with `url`)."""

    tag: str | None = None
    revision_name: str | None = None
    configuration_name: str | None = None
    latest_revision: bool | None = None
    percent: int | None = None
    url: str | None = None

    @property
    def follows_latest(self) -> bool:
        """latestRevision with its default: true exactly when no revisionName is given."""
        if self.latest_revision is not None:
            return self.latest_revision
        return not self.revision_name


class ServiceSpec(KubeModel):
    template: RevisionTemplate
    traffic: list[TrafficTarget] | None = None


class Condition(KubeModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class ConfigurationStatus(KubeModel):
    observed_generation: int | None = None
    latest_created_revision_name: str | None = None
    latest_ready_revision_name: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class RouteStatus(KubeModel):
    observed_generation: int | None = None
    url: str | None = None
    traffic: list[TrafficTarget] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


class Addressable(KubeModel):
    url: str


class ServiceStatus(ConfigurationStatus):
    url: str | None = None
    address: Addressable | None = None
    """The cluster-local address (http://<name>.<namespace>.svc.cluster.local)."""
    traffic: list[TrafficTarget] = Field(default_factory=list)

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


class RevisionStatus(KubeModel):
    observed_generation: int | None = None
    actual_replicas: int | None = None
    desired_replicas: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


def _traffic_problems(
    traffic: list[TrafficTarget], path: FieldPath
) -> Iterator[tuple[FieldPath, str]]:
    """The webhook's rules for a traffic block inside a Service."""
    total = 0
    tags: dict[str, int] = {}
    for i, target in enumerate(traffic):
        here = path + (i,)
        if target.configuration_name is not None:
            yield (
                here + ("configurationName",),
                "may not be set inside a Service (its own Configuration is implied): use "
                "latestRevision: true",
            )
        if target.url is not None:
            yield here + ("url",), "url is set by Knative in status, it may not be written"
        if target.revision_name and target.latest_revision:
            yield (
                here + ("latestRevision",),
                f"may not be true when revisionName ({target.revision_name!r}) is set: a "
                "target follows the latest revision or pins one, not both",
            )
        if not target.revision_name and target.latest_revision is False:
            yield (
                here,
                "expected exactly one of revisionName or latestRevision: true, got neither",
            )
        if target.percent is not None and not 0 <= target.percent <= 100:
            yield here + ("percent",), f"expected 0 <= {target.percent} <= 100"
        total += target.percent or 0
        if target.tag is not None:
            if problem := dns_label_problem(target.tag, rfc1035=True):
                yield here + ("tag",), problem
            if target.tag in tags:
                yield (
                    here + ("tag",),
                    f"duplicate tag {target.tag!r} (first in traffic[{tags[target.tag]}])",
                )
            tags.setdefault(target.tag, i)
    if traffic and total != 100:
        yield path, f"traffic targets sum to {total}, want 100"


class KnativeService(KubeObject):
    """serving.knative.dev/v1 Service: a template (new revision per change) plus traffic."""

    api_version: Literal["serving.knative.dev/v1"] = API_VERSION
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec
    status: ServiceStatus | None = None

    name_rule = "label1035"

    @property
    def template(self) -> RevisionTemplate:
        return self.spec.template

    @property
    def traffic(self) -> list[TrafficTarget]:
        """The traffic block with Knative's default: 100 % to the latest ready revision."""
        if self.spec.traffic:
            return list(self.spec.traffic)
        return [TrafficTarget(latest_revision=True, percent=100)]

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        name = self.metadata.name
        meta = self.spec.template.metadata
        template_path: FieldPath = ("spec", "template")
        yield from label_problems(meta.labels, template_path + ("metadata", "labels"))
        if meta.name is not None:
            if problem := dns_label_problem(meta.name):
                yield template_path + ("metadata", "name"), problem
            elif not meta.name.startswith(f"{name}-"):
                yield (
                    template_path + ("metadata", "name"),
                    f"revision name {meta.name!r} must start with the Service name and a dash "
                    f"({name}-...)",
                )
        for line in annotation_errors(meta.annotations, _PERMISSIVE_CONFIG):
            message, _, keys = line.rpartition(": ")
            for key in keys.split(", "):
                # Knative's own message, plus the closest metric for a typo such as "rsp".
                hint = did_you_mean(meta.annotations.get(key, ""), ("concurrency", "rps", "cpu", "memory"))
                fixed = f"{message} ({hint})" if hint and key.endswith("/metric") else message
                yield template_path + ("metadata", "annotations", key), fixed
        try:
            revision_progress_deadline(meta.annotations, _PERMISSIVE_CONFIG.progress_deadline)
        except ValueError as exc:
            yield template_path + ("metadata", "annotations", PROGRESS_DEADLINE), str(exc)
        try:
            rollout_duration(self.metadata.annotations, 0.0)
        except ValueError as exc:
            yield ("metadata", "annotations", ROLLOUT_DURATION), str(exc)
        yield from self.spec.template.spec.problems(template_path + ("spec",))
        if self.spec.traffic is not None:
            yield from _traffic_problems(self.spec.traffic, ("spec", "traffic"))


class ConfigurationSpec(KubeModel):
    template: RevisionTemplate


class Configuration(KubeObject):
    """Made by the Service reconciler from spec.template; numbers the revisions."""

    api_version: Literal["serving.knative.dev/v1"] = API_VERSION
    kind: Literal["Configuration"] = "Configuration"
    spec: ConfigurationSpec
    status: ConfigurationStatus | None = None


class RouteSpec(KubeModel):
    traffic: list[TrafficTarget] = Field(default_factory=list)


class Route(KubeObject):
    """Made by the Service reconciler from spec.traffic; the Ingress follows it."""

    api_version: Literal["serving.knative.dev/v1"] = API_VERSION
    kind: Literal["Route"] = "Route"
    spec: RouteSpec
    status: RouteStatus | None = None


class Revision(KubeObject):
    """An immutable snapshot of a template: what actually runs."""

    api_version: Literal["serving.knative.dev/v1"] = API_VERSION
    kind: Literal["Revision"] = "Revision"
    spec: RevisionSpec
    status: RevisionStatus | None = None


@dataclass(frozen=True)
class RouteTable:
    """The resolved traffic: main-URL split, tags, and what could not be resolved."""

    split: tuple[tuple[str, int], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    traffic: tuple[TrafficTarget, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def routed(self) -> set[str]:
        """Revisions the route references (routingState "active")."""
        return {r for r, _ in self.split} | {r for _, r in self.tags}

    def pick(self, rng: random.Random) -> str:
        """The revision one request to the main URL goes to: a uniform point on [0, 100)
        against the split's cumulative percents (the split is non-empty and sums to 100)."""
        point = rng.random() * 100
        for name, percent in self.split:
            point -= percent
            if point < 0:
                return name
        return self.split[-1][0]  # float rounding at the top end


def resolve_traffic(traffic: list[TrafficTarget], latest_ready: str | None,
                    ready: set[str], url_of_tag: Callable[[str], str]) -> RouteTable:
    """Knative's traffic resolution: latestRevision -> the latest ready revision; entries of
    the same revision and tag merged; 0 % entries take no share of the main URL."""
    merged: dict[tuple[str, str | None], TrafficTarget] = {}
    problems = []
    for target in traffic:
        name = target.revision_name if not target.follows_latest else latest_ready
        if name is None:
            problems.append("no revision is ready yet for latestRevision")
            continue
        if name not in ready:
            problems.append(f"revision {name!r} is not ready")
        key = (name, target.tag)
        if key in merged:
            old = merged[key]
            merged[key] = old.model_copy(update={"percent": (old.percent or 0) +
                                                 (target.percent or 0)})
        else:
            merged[key] = TrafficTarget(
                tag=target.tag, revision_name=name, latest_revision=target.follows_latest,
                percent=target.percent or 0,
                url=url_of_tag(target.tag) if target.tag else None)
    split: dict[str, int] = {}
    for (name, _), target in merged.items():
        if target.percent:
            split[name] = split.get(name, 0) + target.percent
    tags = tuple((tag, name) for (name, tag), _ in merged.items() if tag)
    return RouteTable(tuple(split.items()), tags, tuple(merged.values()), tuple(problems))
