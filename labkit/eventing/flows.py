"""Sequence and Parallel, built as Knative builds them: channels and subscriptions.

knative/eventing `pkg/reconciler/sequence/sequence.go` (ReconcileKind) and
`pkg/reconciler/sequence/resources/{channel,subscription}.go`: one channel per step,
`<name>-kn-sequence-<i>`, and one Subscription per step of the same name on that channel, whose
subscriber is the step (with the step's delivery) and whose reply is the next step's channel;
the last step's reply is the Sequence's `spec.reply` (none: the reply is dropped). The
Sequence's address is channel 0's.

`pkg/reconciler/parallel/resources/{channel,subscription}.go`: an ingress channel
`<name>-kn-parallel` and one channel per branch, `<name>-kn-parallel-<i>`. On the ingress
channel a filter Subscription `<name>-kn-parallel-filter-<i>` per branch sends the event to the
branch's filter and the filter's reply to the branch channel; on the branch channel the
Subscription `<name>-kn-parallel-<i>` sends to the branch subscriber (with the branch's
delivery) and its reply to the branch's reply, else the Parallel's. A filter "passes" an event
by replying with it (https://knative.dev/docs/eventing/flows/parallel/): an empty 2xx ends the
branch. A branch without filter gets every event (Knative's filter subscription then has no
subscriber and the channel forwards straight to its reply; here the subscription's subscriber
is the branch channel itself, which is the same hop).

How this differs from a cluster: the channels and subscriptions are the real labkit
InMemoryChannel and Subscription controllers (same fan-out, delivery, reply and dead-letter
code), owned by the flow instead of being separate API objects: `cluster.status()` lists the
Sequence, and its `detail` lists the children by the names Knative gives them
(`cluster.controller("InMemoryChannel", "<name>-kn-sequence-0")` or `channel_handle` opens one,
through `owned()`). A reply
that Knative addresses with a `ref` to the next channel is addressed here by that channel's URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit.core.controller import ObjectStatus
from labkit.eventing.channel import ChannelController, SubscriptionController
from labkit.eventing.flow_models import Parallel, Sequence
from labkit.eventing.models import (
    ChannelTemplate,
    DeliverySpecModel,
    Destination,
    InMemoryChannel,
    Subscription,
)
from labkit.manifests import KubeObject

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["FlowController", "parallel_plan", "sequence_plan"]

Flow = Sequence | Parallel


@dataclass(frozen=True)
class SubscriptionPlan:
    """One Subscription the flow needs: its name, channel, subscriber, reply and delivery.

    `subscriber_channel` / `reply_channel` name one of the flow's own channels instead of a
    Destination (its URL is known only once that channel listens)."""

    name: str
    channel: str
    subscriber: Destination | None = None
    subscriber_channel: str | None = None
    reply: Destination | None = None
    reply_channel: str | None = None
    delivery: DeliverySpecModel | None = None


@dataclass(frozen=True)
class Plan:
    """The children of one flow, as Knative's resources package names them."""

    channels: tuple[str, ...]
    subscriptions: tuple[SubscriptionPlan, ...]
    entry: str
    """The channel whose address is the flow's address."""


def sequence_plan(sequence: Sequence) -> Plan:
    """resources.NewSubscription per step: reply to the next channel, the last to spec.reply."""
    name = sequence.metadata.name
    channels = tuple(f"{name}-kn-sequence-{i}" for i in range(len(sequence.spec.steps)))
    subscriptions = []
    for i, step in enumerate(sequence.spec.steps):
        last = i == len(channels) - 1
        subscriptions.append(SubscriptionPlan(
            name=channels[i], channel=channels[i],
            subscriber=Destination(ref=step.ref, uri=step.uri),
            reply=sequence.spec.reply if last else None,
            reply_channel=None if last else channels[i + 1], delivery=step.delivery))
    return Plan(channels, tuple(subscriptions), channels[0])


def parallel_plan(parallel: Parallel) -> Plan:
    """resources.NewFilterSubscription and NewSubscription per branch."""
    name = parallel.metadata.name
    ingress = f"{name}-kn-parallel"
    branches = tuple(f"{name}-kn-parallel-{i}" for i in range(len(parallel.spec.branches)))
    subscriptions = []
    for i, branch in enumerate(parallel.spec.branches):
        if branch.filter is not None:
            subscriptions.append(SubscriptionPlan(
                name=f"{name}-kn-parallel-filter-{i}", channel=ingress, subscriber=branch.filter,
                reply_channel=branches[i]))
        else:
            subscriptions.append(SubscriptionPlan(
                name=f"{name}-kn-parallel-filter-{i}", channel=ingress,
                subscriber_channel=branches[i]))
        subscriptions.append(SubscriptionPlan(
            name=branches[i], channel=branches[i], subscriber=branch.subscriber,
            reply=branch.reply or parallel.spec.reply, delivery=branch.delivery))
    return Plan((ingress, *branches), tuple(subscriptions), ingress)


def _plan(flow: Flow) -> Plan:
    return sequence_plan(flow) if isinstance(flow, Sequence) else parallel_plan(flow)


def _ref(kind: str, name: str, api_version: str) -> dict[str, str]:
    return {"apiVersion": api_version, "kind": kind, "name": name}


class FlowController:
    """Runs a Sequence or a Parallel: keeps its channels and subscriptions in step with it."""

    def __init__(self, cluster: LocalCluster, obj: Flow) -> None:
        self.cluster = cluster
        self.obj: Flow = obj
        self.channels: dict[str, ChannelController] = {}
        self.subscriptions: dict[str, SubscriptionController] = {}

    # -- building ---------------------------------------------------------------------------

    def apply(self, obj: Flow) -> None:
        plan = _plan(obj)
        created: list[ChannelController | SubscriptionController] = []
        try:
            for name in plan.channels:
                created += self._channel(obj, name, obj.channel_template)
            for wanted in plan.subscriptions:
                created += self._subscription(obj, wanted)
        except Exception:
            for child in reversed(created):  # undo this apply's own work before raising
                child.delete()
                self.channels = {k: v for k, v in self.channels.items() if v is not child}
                self.subscriptions = {k: v for k, v in self.subscriptions.items()
                                      if v is not child}
            raise
        for name in set(self.subscriptions) - {s.name for s in plan.subscriptions}:
            self.subscriptions.pop(name).delete()
        for name in set(self.channels) - set(plan.channels):
            self.channels.pop(name).delete()
        self.obj = obj

    def _channel(self, flow: Flow, name: str,
                 template: ChannelTemplate) -> list[ChannelController]:
        channel = InMemoryChannel.model_validate({
            "metadata": {"name": name, "namespace": flow.metadata.namespace,
                         "labels": {"labkit.dev/owner": f"{flow.kind}/{flow.metadata.name}"}},
            "spec": template.spec or {}})
        existing = self.channels.get(name)
        if existing is not None:
            existing.apply(channel)
            return []
        controller = ChannelController(self.cluster, channel)
        controller.apply(channel)  # refuses a name a user's channel already holds
        self.channels[name] = controller
        return [controller]

    def _destination(self, destination: Destination | None,
                     channel: str | None) -> dict[str, Any] | None:
        if channel is not None:
            return {"uri": self.channels[channel].url}
        if destination is None:
            return None
        return destination.model_dump(by_alias=True, exclude_none=True)

    def _subscription(self, flow: Flow, wanted: SubscriptionPlan) -> list[SubscriptionController]:
        template = flow.channel_template
        spec: dict[str, Any] = {
            "channel": _ref(template.kind, wanted.channel, template.api_version),
            "subscriber": self._destination(wanted.subscriber, wanted.subscriber_channel)}
        reply = self._destination(wanted.reply, wanted.reply_channel)
        if reply is not None:
            spec["reply"] = reply
        if wanted.delivery is not None:
            spec["delivery"] = wanted.delivery.model_dump(by_alias=True, exclude_none=True)
        subscription = Subscription.model_validate({
            "metadata": {"name": wanted.name, "namespace": flow.metadata.namespace},
            "spec": spec})
        existing = self.subscriptions.get(wanted.name)
        if existing is not None:
            existing.apply(subscription)  # same name, same channel: Knative updates it
            return []
        controller = SubscriptionController(self.cluster, subscription)
        controller.apply(subscription)
        self.subscriptions[wanted.name] = controller
        return [controller]

    # -- running ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.reconcile()  # a step's Service may appear or move

    def owned(self) -> Iterator[tuple[KubeObject, ChannelController | SubscriptionController]]:
        """The channels and subscriptions Knative would create with this flow as their owner."""
        yield from ((c.obj, c) for c in self.channels.values())
        yield from ((s.obj, s) for s in self.subscriptions.values())

    def delete(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.delete()
        for channel in self.channels.values():
            channel.delete()
        self.subscriptions.clear()
        self.channels.clear()

    def status(self) -> ObjectStatus:
        plan = _plan(self.obj)
        template = self.obj.channel_template
        subscriptions = {name: s.status() for name, s in self.subscriptions.items()}
        problems = [f"{name}: {s.message}" for name, s in subscriptions.items() if not s.ready]
        entry = self.channels.get(plan.entry)
        url = entry.url if entry is not None and entry.port is not None else None
        channel_statuses = [{"channel": _ref(template.kind, name, template.api_version),
                             "ready": name in self.channels} for name in plan.channels]
        subscription_statuses = [
            {"subscription": _ref("Subscription", s.name, "messaging.knative.dev/v1"),
             "ready": s.name in subscriptions and subscriptions[s.name].ready,
             "physicalSubscription": dict(subscriptions[s.name].detail.get(
                 "physicalSubscription", {})) if s.name in subscriptions else {}}
            for s in plan.subscriptions]
        detail: dict[str, Any] = {"address": {"url": url}}
        if isinstance(self.obj, Sequence):
            detail["channelStatuses"] = channel_statuses
            detail["subscriptionStatuses"] = subscription_statuses
        else:
            detail["ingressChannelStatus"] = channel_statuses[0]
            detail["branchStatuses"] = [
                {"filterSubscriptionStatus": subscription_statuses[2 * i],
                 "filterChannelStatus": channel_statuses[i + 1],
                 "subscriberSubscriptionStatus": subscription_statuses[2 * i + 1]}
                for i in range(len(self.obj.spec.branches))]
        wired = (f"{len(self.obj.spec.steps)} step(s)" if isinstance(self.obj, Sequence)
                 else f"{len(self.obj.spec.branches)} branch(es)")
        return ObjectStatus(
            kind=self.obj.kind, name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace, ready=url is not None and not problems,
            url=url, message="; ".join(problems) or f"{wired} wired", detail=detail)
