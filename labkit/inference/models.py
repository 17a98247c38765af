"""KServe's InferenceService (serving.kserve.io/v1beta1), the subset labkit runs faithfully.

A predictor is a model (format + storageUri, run by labkit's model server; the formats are
labkit.inference.runtimes.FORMATS), the legacy `sklearn:` spec, or a custom container
(`containers:`, e.g. a kserve.Model class on labkit.inference.custom); around it the component
fields KServe shares between predictor and transformer: replicas and autoscaling (minReplicas 0 =
scale to zero), containerConcurrency, timeout, canaryTrafficPercent, batcher and logger. A
transformer is a container (a Python program) in front of the predictor.

`problems()` carries KServe's webhook checks that need no cluster (exactly one predictor
implementation, minReplicas <= maxReplicas, percent 0..100, logger modes, a storageUri with a
scheme KServe knows) and refuses, with the reason, what a laptop cannot honour (gRPC protocols,
cpu/memory scaling, formats whose package is missing). Whether a storageUri can be had offline
is decided when the InferenceService is applied (labkit.inference.storage).

Followed: kserve/kserve pkg/apis/serving/v1beta1 (inference_service.go, component.go,
predictor.go, predictor_model.go, transformer.go) per /work/shared/reference/kserve-protocol.md;
the messages are labkit's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from labkit.core.models import Container, EnvVar
from labkit.inference.runtimes import format_problem
from labkit.manifests import (
    CONTAINER_IGNORED,
    FieldPath,
    KubeModel,
    KubeObject,
    dns_label_problem,
    label_problems,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "STORAGE_PREFIXES",
    "Batcher",
    "InferenceService",
    "InferenceServiceSpec",
    "LegacySklearnSpec",
    "LoggerSpec",
    "ModelFormat",
    "ModelSpec",
    "PredictorSpec",
    "TransformerSpec",
]

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"

STORAGE_PREFIXES = ("gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://",
                    "webhdfs://", "oci://", "oci+native://", "oci+fetch://", "hf://")
"""KServe's SupportedStorageURIPrefixList (plus local paths)."""


class ModelFormat(KubeModel):
    name: str
    version: str | None = None


class ModelSpec(KubeModel):
    """predictor.model: what to serve and from where (container fields: env, args)."""

    # KServe starts the model server itself: a livenessProbe here changes nothing labkit runs.
    ignored_fields: ClassVar[Mapping[str, str]] = {
        **CONTAINER_IGNORED, "livenessProbe": "labkit's model server is not probed for liveness"}

    model_format: ModelFormat
    runtime: str | None = None
    protocol_version: Literal["v1", "v2", "grpc-v1", "grpc-v2"] | None = None
    storage_uri: str | None = None
    args: list[str] | None = None
    env: list[EnvVar] = Field(default_factory=list)


class LegacySklearnSpec(KubeModel):
    """predictor.sklearn: the pre-`model` way to say modelFormat sklearn."""

    storage_uri: str | None = None
    protocol_version: Literal["v1", "v2", "grpc-v1", "grpc-v2"] | None = None
    runtime_version: str | None = None
    env: list[EnvVar] = Field(default_factory=list)


class Batcher(KubeModel):
    """maxBatchSize rows per predict; maxLatency in milliseconds; timeout in seconds."""

    max_batch_size: int | None = Field(default=None, ge=1)
    max_latency: int | None = Field(default=None, ge=1)
    timeout: int | None = Field(default=None, ge=1)


class LoggerSpec(KubeModel):
    url: str | None = None
    mode: Literal["all", "request", "response"] | None = None


class _Component(KubeModel):
    """KServe's ComponentExtensionSpec: the fields predictor and transformer share."""

    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)
    scale_target: int | None = Field(default=None, ge=1)
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = None
    container_concurrency: int | None = Field(default=None, ge=0, le=1000)
    timeout: int | None = Field(default=None, ge=1)
    canary_traffic_percent: int | None = Field(default=None, ge=0, le=100)
    batcher: Batcher | None = None
    logger: LoggerSpec | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    def component_problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high and low > high:
            yield (path + ("minReplicas",),
                   f"minReplicas ({low}) must not exceed maxReplicas ({high})")
        if self.scale_metric in ("cpu", "memory"):
            yield (path + ("scaleMetric",),
                   (f"scaleMetric {self.scale_metric} needs the HPA on a cluster; labkit's "
                    "autoscaler (Knative KPA) scales on concurrency or rps"))
        yield from label_problems(self.labels, path + ("labels",))


class PredictorSpec(_Component):
    """`model` (a format served by labkit's model server), the legacy `sklearn`, or
    `containers`: a custom predictor (KServe's PodSpec inline; labkit runs one container, e.g.
    a kserve.Model class served by labkit.inference.custom)."""

    name: str | None = None
    model: ModelSpec | None = None
    sklearn: LegacySklearnSpec | None = None
    containers: list[Container] | None = None

    @property
    def model_format(self) -> str:
        return self.model.model_format.name if self.model else "sklearn"

    @property
    def storage_uri(self) -> str | None:
        spec = self.model or self.sklearn
        return spec.storage_uri if spec else None

    @property
    def protocol_version(self) -> str:
        spec = self.model or self.sklearn
        return (spec.protocol_version if spec else None) or "v1"

    @property
    def storage_uri_field(self) -> str:
        return f"spec.predictor.{'model' if self.model else 'sklearn'}.storageUri"

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        yield from self.component_problems(path)
        if self.name is not None and (problem := dns_label_problem(self.name, rfc1035=True)):
            yield path + ("name",), problem
        given = [k for k in ("model", "sklearn", "containers") if getattr(self, k) is not None]
        if len(given) != 1:
            yield (path, "exactly one of [model, sklearn, containers] must be specified in "
                   "PredictorSpec" + (f" (got {', '.join(given)})" if given else ""))
            return
        spec_path = path + (given[0],)
        if self.containers is not None:
            if len(self.containers) != 1:
                yield spec_path, "a custom predictor runs exactly one container here"
            for index, container in enumerate(self.containers):
                yield from container.problems(spec_path + (index,))
            return
        if self.model is not None:
            name = self.model.model_format.name
            if (why := format_problem(name)) is not None:
                yield (spec_path + ("modelFormat", "name"),
                       f"modelFormat {name!r} cannot be served here: {why}")
        protocol = (self.model or self.sklearn).protocol_version  # type: ignore[union-attr]
        if protocol and protocol.startswith("grpc"):
            yield (spec_path + ("protocolVersion",),
                   f"{protocol} is not served locally; use v1 or v2 (REST)")
        uri = self.storage_uri
        if uri is None:
            yield spec_path + ("storageUri",), "a storageUri is required (where the model is)"
        elif "://" in uri and not uri.startswith(STORAGE_PREFIXES):
            yield (spec_path + ("storageUri",),
                   (f"storageUri must be one of [{', '.join(STORAGE_PREFIXES)}] or a local "
                    f"path, got {uri!r}"))


class TransformerSpec(_Component):
    """A pre/post-processing program in front of the predictor (one container)."""

    containers: list[Container] = Field(min_length=1)

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        yield from self.component_problems(path)
        if len(self.containers) != 1:
            yield path + ("containers",), "a transformer runs exactly one container"
        for index, container in enumerate(self.containers):
            yield from container.problems(path + ("containers", index))
        if self.batcher is not None:
            yield path + ("batcher",), "the batcher batches model calls: set it on the predictor"


class InferenceServiceSpec(KubeModel):
    predictor: PredictorSpec
    transformer: TransformerSpec | None = None


class InferenceService(KubeObject):
    """serving.kserve.io/v1beta1 InferenceService: a model behind V1/V2 REST, autoscaled."""

    api_version: Literal["serving.kserve.io/v1beta1"] = "serving.kserve.io/v1beta1"
    kind: Literal["InferenceService"] = "InferenceService"
    spec: InferenceServiceSpec
    status: dict[str, Any] | None = None

    name_rule = "label1035"

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        yield from self.spec.predictor.problems(("spec", "predictor"))
        if self.spec.transformer is not None:
            yield from self.spec.transformer.problems(("spec", "transformer"))
