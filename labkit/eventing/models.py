"""Knative Eventing kinds as pydantic models, validated the way Knative's webhooks validate them.

Kinds: eventing.knative.dev/v1 Broker and Trigger; messaging.knative.dev/v1 Channel,
InMemoryChannel and Subscription; sources.knative.dev/v1 PingSource; and labkit's own
sources.labkit.dev/v1alpha1 DirectorySource (see `DirectorySource` for the real source it
stands for). Field names and shapes are Knative's, so the YAML a student writes here is the YAML
a cluster takes (tests check exports against the official CRDs).

The semantic rules live in the policy modules and are not repeated here: `filters.py` parses
Trigger filters, `delivery.py` parses DeliverySpecs, `cron.py` parses schedules. Each model's
`problems()` runs those parsers and turns their `SpecError` field paths into the manifest
loader's FILE:LINE: Kind/name: field.path: message errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from labkit.eventing import SpecError
from labkit.eventing.cron import parse_schedule, parse_timezone
from labkit.eventing.delivery import DeliverySpec, parse_delivery
from labkit.eventing.filters import Filter, parse_trigger_filter
from labkit.manifests import FieldPath, KubeModel, KubeObject

__all__ = [
    "FILE_EVENT_TYPE",
    "PING_EVENT_TYPE",
    "Broker",
    "Channel",
    "ChannelTemplate",
    "CloudEventOverrides",
    "DeliverySpecModel",
    "Destination",
    "DirectorySource",
    "InMemoryChannel",
    "KReference",
    "PingSource",
    "Subscription",
    "Trigger",
    "TriggerFilter",
    "field_path",
]

PING_EVENT_TYPE = "dev.knative.sources.ping"
FILE_EVENT_TYPE = "dev.labkit.sources.file.created"
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def field_path(text: str) -> FieldPath:
    """'spec.filters[1].prefix' -> ('spec', 'filters', 1, 'prefix') (for line lookup)."""
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return tuple(parts)


def _spec_problems(error: SpecError) -> tuple[FieldPath, str]:
    return field_path(error.path), error.message


class KReference(KubeModel):
    """A reference to another object (Knative's duckv1.KReference)."""

    api_version: str | None = None
    kind: str
    name: str
    namespace: str | None = None


class Destination(KubeModel):
    """Where events go: `ref` to an addressable object, `uri`, or both (uri relative to ref)."""

    ref: KReference | None = None
    uri: str | None = None

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        if self.ref is None and not self.uri:
            yield path, "a destination needs `ref` (an object) or `uri` (an absolute URL)"
        if self.uri and self.ref is None and not re.match(r"^https?://", self.uri):
            yield path + ("uri",), (f"{self.uri!r} is not an absolute http(s) URL "
                                    "(use `ref` for objects in the cluster)")


class DeliverySpecModel(KubeModel):
    """Knative's DeliverySpec; rules are checked by `delivery.parse_delivery`."""

    retry: int | None = None
    backoff_policy: str | None = None
    backoff_delay: str | None = None
    timeout: str | None = None
    retry_after_max: str | None = None
    dead_letter_sink: Destination | None = None
    format: str | None = None

    def parsed(self, path: str = "spec.delivery") -> DeliverySpec | None:
        """The policy's DeliverySpec (raises SpecError with the field path)."""
        return parse_delivery(self.model_dump(by_alias=True, exclude_none=True), path)

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        try:
            self.parsed(".".join(str(p) for p in path))
        except SpecError as err:
            yield _spec_problems(err)
        if self.dead_letter_sink is not None:
            yield from self.dead_letter_sink.problems(path + ("deadLetterSink",))


def _delivery_problems(delivery: DeliverySpecModel | None) -> Iterator[tuple[FieldPath, str]]:
    if delivery is not None:
        yield from delivery.problems(("spec", "delivery"))


# ---------------------------------------------------------------------------------------------
# eventing.knative.dev/v1


class BrokerSpec(KubeModel):
    config: KReference | None = None
    delivery: DeliverySpecModel | None = None


class Broker(KubeObject):
    """A durable event mesh entry point: HTTP ingress, SQLite log, trigger dispatcher.

    labkit annotation `labkit.dev/max-body-bytes` sets the ingress body limit (default 1 MiB;
    larger bodies get 413).
    """

    api_version: Literal["eventing.knative.dev/v1"] = "eventing.knative.dev/v1"
    kind: Literal["Broker"] = "Broker"
    spec: BrokerSpec = Field(default_factory=BrokerSpec)

    MAX_BODY_ANNOTATION: ClassVar[str] = "labkit.dev/max-body-bytes"
    DEFAULT_MAX_BODY: ClassVar[int] = 1024 * 1024

    @property
    def max_body_bytes(self) -> int:
        return int(self.metadata.annotations.get(self.MAX_BODY_ANNOTATION, self.DEFAULT_MAX_BODY))

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        raw = self.metadata.annotations.get(self.MAX_BODY_ANNOTATION)
        if raw is not None and (not raw.isdigit() or int(raw) < 1):
            yield (("metadata", "annotations", self.MAX_BODY_ANNOTATION),
                   f"must be a positive number of bytes, got {raw!r}")
        yield from _delivery_problems(self.spec.delivery)


class TriggerFilter(KubeModel):
    attributes: dict[str, str] | None = None


class TriggerSpec(KubeModel):
    broker: str
    filter: TriggerFilter | None = None
    filters: list[dict[str, Any]] | None = None
    subscriber: Destination
    delivery: DeliverySpecModel | None = None


class Trigger(KubeObject):
    api_version: Literal["eventing.knative.dev/v1"] = "eventing.knative.dev/v1"
    kind: Literal["Trigger"] = "Trigger"
    spec: TriggerSpec

    def filter_spec(self) -> dict[str, Any]:
        """The `filter`/`filters` part of the spec, as `filters.parse_trigger_filter` takes it."""
        return {k: v for k, v in self.spec.model_dump(by_alias=True, exclude_none=True).items()
                if k in ("filter", "filters")}

    def compiled_filter(self) -> Filter:
        return parse_trigger_filter(self.filter_spec())

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        try:
            self.compiled_filter()
        except SpecError as err:
            yield _spec_problems(err)
        yield from self.spec.subscriber.problems(("spec", "subscriber"))
        yield from _delivery_problems(self.spec.delivery)


# ---------------------------------------------------------------------------------------------
# messaging.knative.dev/v1


class ChannelTemplate(KubeModel):
    api_version: str
    kind: str
    spec: dict[str, Any] | None = None


class ChannelableSpec(KubeModel):
    delivery: DeliverySpecModel | None = None


class ChannelSpec(ChannelableSpec):
    channel_template: ChannelTemplate | None = None


class Channel(KubeObject):
    """A generic Channel; labkit backs every channel with an in-memory one."""

    api_version: Literal["messaging.knative.dev/v1"] = "messaging.knative.dev/v1"
    kind: Literal["Channel"] = "Channel"
    spec: ChannelSpec = Field(default_factory=ChannelSpec)

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        template = self.spec.channel_template
        if template is not None and (template.api_version, template.kind) != (
                "messaging.knative.dev/v1", "InMemoryChannel"):
            message = ("labkit runs channels as messaging.knative.dev/v1 InMemoryChannel, got "
                       f"{template.api_version} {template.kind}")
            yield ("spec", "channelTemplate", "kind"), message
        yield from _delivery_problems(self.spec.delivery)


class InMemoryChannel(KubeObject):
    """Knative's development channel: not durable, events in memory only."""

    api_version: Literal["messaging.knative.dev/v1"] = "messaging.knative.dev/v1"
    kind: Literal["InMemoryChannel"] = "InMemoryChannel"
    spec: ChannelableSpec = Field(default_factory=ChannelableSpec)

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        yield from _delivery_problems(self.spec.delivery)


class SubscriptionSpec(KubeModel):
    channel: KReference
    subscriber: Destination | None = None
    reply: Destination | None = None
    delivery: DeliverySpecModel | None = None


class Subscription(KubeObject):
    api_version: Literal["messaging.knative.dev/v1"] = "messaging.knative.dev/v1"
    kind: Literal["Subscription"] = "Subscription"
    spec: SubscriptionSpec

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        channel = self.spec.channel
        if channel.kind not in ("Channel", "InMemoryChannel"):
            yield (("spec", "channel", "kind"),
                   f"must be Channel or InMemoryChannel, got {channel.kind!r}")
        if self.spec.subscriber is None:
            yield ("spec", "subscriber"), "required field is missing"
        else:
            yield from self.spec.subscriber.problems(("spec", "subscriber"))
        if self.spec.reply is not None:
            yield from self.spec.reply.problems(("spec", "reply"))
        yield from _delivery_problems(self.spec.delivery)


# ---------------------------------------------------------------------------------------------
# Sources


class CloudEventOverrides(KubeModel):
    extensions: dict[str, str] = Field(default_factory=dict)

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        for name in self.extensions:
            if not _EXTENSION_NAME.match(name):
                yield (path + ("extensions", name),
                       f"invalid extension name {name!r}: 1-20 lowercase letters and digits")
            elif name in ("id", "source", "type", "specversion", "subject", "time",
                          "datacontenttype", "dataschema", "data"):
                yield (path + ("extensions", name),
                       f"{name!r} is a CloudEvents attribute, not an extension")


class PingSourceSpec(KubeModel):
    schedule: str = "* * * * *"
    timezone: str | None = None
    content_type: str | None = None
    data: str | None = None
    data_base64: str | None = None
    sink: Destination
    ce_overrides: CloudEventOverrides | None = None


class PingSource(KubeObject):
    """Emits `dev.knative.sources.ping` events on a cron schedule."""

    api_version: Literal["sources.knative.dev/v1"] = "sources.knative.dev/v1"
    kind: Literal["PingSource"] = "PingSource"
    spec: PingSourceSpec

    @property
    def event_source(self) -> str:
        return f"/apis/v1/namespaces/{self.metadata.namespace}/pingsources/{self.metadata.name}"

    def payload(self) -> bytes | None:
        """The exact bytes every event carries (data as UTF-8, or dataBase64 decoded)."""
        if self.spec.data_base64 is not None:
            return base64.b64decode(self.spec.data_base64, validate=True)
        return None if self.spec.data is None else self.spec.data.encode("utf-8")

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        spec = self.spec
        try:
            parse_schedule(spec.schedule)
        except ValueError as err:
            yield ("spec", "schedule"), str(err)
        try:
            parse_timezone(spec.timezone)
        except ValueError as err:
            yield ("spec", "timezone"), str(err)
        payload_ok = True
        if spec.data is not None and spec.data_base64 is not None:
            yield ("spec", "dataBase64"), "set either data or dataBase64, not both"
        elif spec.data_base64 is not None:
            try:
                base64.b64decode(spec.data_base64, validate=True)
            except (binascii.Error, ValueError) as err:
                yield ("spec", "dataBase64"), f"not valid base64: {err}"
                payload_ok = False
        payload = self.payload() if payload_ok else None
        if spec.content_type == "application/json" and payload is not None:
            try:
                document = json.loads(payload)
            except ValueError as err:
                yield ("spec", "data"), f"contentType is application/json but data is not JSON: {err}"
            else:
                if not isinstance(document, dict):
                    yield ("spec", "data"), "with contentType application/json, data must be a JSON object"
        yield from spec.sink.problems(("spec", "sink"))
        if spec.ce_overrides is not None:
            yield from spec.ce_overrides.problems(("spec", "ceOverrides"))


class DirectorySourceSpec(KubeModel):
    directory: str
    pattern: str = "*"
    sink: Destination
    ce_overrides: CloudEventOverrides | None = None


class DirectorySource(KubeObject):
    """labkit's "file uploaded to storage" source: a watched folder.

    When a file appears in `directory` (matching the glob `pattern`) and has stopped growing, it
    emits `dev.labkit.sources.file.created` with subject = the file name and JSON data
    {name, size, sha256}. It stands for a storage-notification source such as the AWS S3 source
    of Knative's eventing-awssqs / TriggerMesh or MinIO bucket notifications (object key ->
    subject). On a real cluster it exports as its documented equivalent: a Deployment running a
    watcher container plus a sources.knative.dev/v1 SinkBinding that injects K_SINK (the
    ContainerSource pattern); see `labkit.eventing.sources.export_directory_source`.
    """

    api_version: Literal["sources.labkit.dev/v1alpha1"] = "sources.labkit.dev/v1alpha1"
    kind: Literal["DirectorySource"] = "DirectorySource"
    spec: DirectorySourceSpec

    @property
    def event_source(self) -> str:
        return (f"/apis/v1alpha1/namespaces/{self.metadata.namespace}/directorysources/"
                f"{self.metadata.name}")

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        if not self.spec.directory:
            yield ("spec", "directory"), "must name a folder"
        if "/" in self.spec.pattern:
            yield ("spec", "pattern"), "a file-name glob such as '*.txt' (no folders)"
        yield from self.spec.sink.problems(("spec", "sink"))
        if self.spec.ce_overrides is not None:
            yield from self.spec.ce_overrides.problems(("spec", "ceOverrides"))
