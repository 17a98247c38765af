"""flows.knative.dev/v1 Sequence and Parallel as pydantic models, validated as Knative does.

Field names and shapes follow knative/eventing `pkg/apis/flows/v1/sequence_types.go` and
`parallel_types.go`; the rules follow `sequence_validation.go` / `parallel_validation.go`:
at least one step (branch), each step a valid Destination with an optional DeliverySpec, each
branch a valid subscriber with optional filter and reply, an optional reply. `channelTemplate`
defaults to the cluster's default channel (`sequence_defaults.go`: config-br-default-channel,
an InMemoryChannel on a stock install); labkit runs InMemoryChannel only, so another template
kind is refused by name rather than silently run as something else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from labkit.eventing import SpecError
from labkit.eventing.models import ChannelTemplate, DeliverySpecModel, Destination, field_path
from labkit.manifests import FieldPath, KubeModel, KubeObject

__all__ = [
    "DEFAULT_CHANNEL_TEMPLATE",
    "Parallel",
    "ParallelBranch",
    "Sequence",
    "SequenceStep",
    "delivery_problems",
    "dotted",
]

DEFAULT_CHANNEL_TEMPLATE = ChannelTemplate(api_version="messaging.knative.dev/v1",
                                           kind="InMemoryChannel")
"""What Knative's defaulting webhook fills in when channelTemplate is left out."""


def dotted(path: FieldPath) -> str:
    """('spec', 'steps', 0, 'delivery') -> 'spec.steps[0].delivery'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def delivery_problems(delivery: DeliverySpecModel | None,
                      path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    """A DeliverySpec's problems under `path` (a list index stays an index for line lookup)."""
    if delivery is None:
        return
    try:
        delivery.parsed(dotted(path))
    except SpecError as err:
        yield field_path(err.path), err.message
    if delivery.dead_letter_sink is not None:
        yield from delivery.dead_letter_sink.problems(path + ("deadLetterSink",))


def _template_problems(template: ChannelTemplate | None) -> Iterator[tuple[FieldPath, str]]:
    if template is None:
        return
    if (template.api_version, template.kind) != ("messaging.knative.dev/v1", "InMemoryChannel"):
        yield (("spec", "channelTemplate", "kind"),
               "labkit runs channels as messaging.knative.dev/v1 InMemoryChannel, got "
               f"{template.api_version} {template.kind}")


class SequenceStep(Destination):
    """A step: where the event goes (`ref`/`uri`) and how it is delivered there."""

    delivery: DeliverySpecModel | None = None


class SequenceSpec(KubeModel):
    steps: list[SequenceStep] = Field(default_factory=list)
    channel_template: ChannelTemplate | None = None
    reply: Destination | None = None


class Sequence(KubeObject):
    """Steps called in order: each step's reply is the next step's input, the last step's
    reply goes to `spec.reply` (dropped without one)."""

    api_version: Literal["flows.knative.dev/v1"] = "flows.knative.dev/v1"
    kind: Literal["Sequence"] = "Sequence"
    spec: SequenceSpec

    @property
    def channel_template(self) -> ChannelTemplate:
        return self.spec.channel_template or DEFAULT_CHANNEL_TEMPLATE

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        if not self.spec.steps:
            yield ("spec", "steps"), "missing field(s): a Sequence needs at least one step"
        for i, step in enumerate(self.spec.steps):
            yield from step.problems(("spec", "steps", i))
            yield from delivery_problems(step.delivery, ("spec", "steps", i, "delivery"))
        yield from _template_problems(self.spec.channel_template)
        if self.spec.reply is not None:
            yield from self.spec.reply.problems(("spec", "reply"))


class ParallelBranch(KubeModel):
    """A branch: an optional filter (a function whose reply lets the event through), the
    subscriber, its optional own reply and delivery."""

    filter: Destination | None = None
    subscriber: Destination
    reply: Destination | None = None
    delivery: DeliverySpecModel | None = None


class ParallelSpec(KubeModel):
    branches: list[ParallelBranch] = Field(default_factory=list)
    channel_template: ChannelTemplate | None = None
    reply: Destination | None = None


class Parallel(KubeObject):
    """Every event goes to every branch; a branch whose filter replies with an event passes
    that event to its subscriber, whose reply goes to the branch's reply or the Parallel's."""

    api_version: Literal["flows.knative.dev/v1"] = "flows.knative.dev/v1"
    kind: Literal["Parallel"] = "Parallel"
    spec: ParallelSpec

    @property
    def channel_template(self) -> ChannelTemplate:
        return self.spec.channel_template or DEFAULT_CHANNEL_TEMPLATE

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        if not self.spec.branches:
            yield ("spec", "branches"), "missing field(s): a Parallel needs at least one branch"
        for i, branch in enumerate(self.spec.branches):
            path: FieldPath = ("spec", "branches", i)
            for name in ("filter", "subscriber", "reply"):
                destination = getattr(branch, name)
                if destination is not None:
                    yield from destination.problems(path + (name,))
            yield from delivery_problems(branch.delivery, path + ("delivery",))
        yield from _template_problems(self.spec.channel_template)
        if self.spec.reply is not None:
            yield from self.spec.reply.problems(("spec", "reply"))
