"""Channel / InMemoryChannel and Subscription: fan-out to every subscriber, in memory.

Knative's InMemoryChannel semantics (reference §8-9), with the async handler: the channel
answers 202 as soon as the event is parsed, then delivers it to every Subscription (no
filtering) with the subscription's DeliverySpec (or the channel's; channels get no cluster
default). A subscriber's reply goes to the subscription's `reply` destination, or is dropped
when there is none; a reply that cannot be delivered sends the *original* event to the
dead-letter sink with knativeerrordest = the reply URL (Knative's implementation).

Not durable, by design and as documented by Knative ("best effort, development only"): events
waiting for a retry live in this process's memory and are lost if it stops. Use a Broker for
durability. A `Channel` is backed by an InMemoryChannel, as Knative's default channel template.

Each channel serves on the cluster's background loop at its own loopback URL (POST `/` or
`/<namespace>/<name>`; the ingress codes are the broker's: 400, 404, 405, 413).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.core.controller import ObjectStatus
from labkit.eventing import delivery as policy
from labkit.eventing.dispatch import Attempt, send
from labkit.eventing.events import Event, EventError, decode_request
from labkit.eventing.metrics import EventingMetrics, EventLog
from labkit.eventing.models import Channel, InMemoryChannel, Subscription
from labkit.eventing.registry import (
    ControllerRegistry,
    Registered,
    registry_of,
    try_resolve,
)
from labkit.eventing.wire import Client, Request, Response, Server, json_error, serve
from labkit.manifests import ObjectMeta
from labkit.net import HOST

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ChannelController", "SubscriptionController", "channel_handle"]

ChannelObject = Channel | InMemoryChannel
_MAX_BODY = 1024 * 1024


@dataclass(eq=False)
class _Registry(ControllerRegistry):
    """Channels and subscriptions of one cluster, so each can find the other in any apply order."""

    channels: dict[tuple[str, str], ChannelController] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], SubscriptionController] = field(default_factory=dict)


def _registry(cluster: LocalCluster) -> _Registry:
    return registry_of(cluster, _Registry)


class ChannelController(Registered):
    def __init__(self, cluster: LocalCluster, obj: ChannelObject) -> None:
        self.cluster = cluster
        self.obj: ChannelObject = obj
        self.metrics = EventingMetrics("channel", "subscription")
        self.log = EventLog()
        self._server: Server | None = None
        self._client: Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def apply(self, obj: ChannelObject) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            other = registry.channels.get((obj.metadata.namespace, obj.metadata.name))
            if other is not None and other is not self:
                raise ValueError(f"a {other.obj.kind} named {obj.metadata.name!r} already "
                                 "exists; Channel and InMemoryChannel names share one space here")
            self.obj = obj
            if self._server is None:
                self._server = self.cluster.loop.run(self._start())
                self.port = int(self._server.sockets[0].getsockname()[1])
            registry.channels[self.key] = self

    async def _start(self) -> Server:
        self._client = Client()
        return await serve(self._handle, port=0, max_body=_MAX_BODY)

    def owned(self) -> Iterator[tuple[InMemoryChannel, ChannelController]]:
        """A generic Channel's backing channel: an InMemoryChannel of the same name and namespace
        (knative/eventing pkg/reconciler/channel/resources/channel.go, `NewChannel`). One
        controller runs both here, so the backing channel's controller is this one."""
        if isinstance(self.obj, Channel):
            meta = self.obj.metadata
            yield InMemoryChannel(metadata=ObjectMeta(name=meta.name, namespace=meta.namespace)), self

    def delete(self) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            registry.channels.pop(self.key, None)
        if self._server is not None and self.cluster.loop.running:
            self.cluster.loop.run(self._stop())
        self._server = None

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()  # in-memory: what waits for a retry is lost, as documented
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            self._client.close()

    def status(self) -> ObjectStatus:
        subscriptions = self._subscriptions()
        return ObjectStatus(
            kind=self.obj.kind, name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace, ready=self._server is not None, url=self.url,
            message=f"{len(subscriptions)} subscription(s); in memory, not durable",
            detail={"subscribers": [s.obj.metadata.name for s in subscriptions],
                    "inFlight": len(self._tasks)})

    def _subscriptions(self) -> list[SubscriptionController]:
        registry = _registry(self.cluster)
        with registry.lock:
            return sorted((s for s in registry.subscriptions.values()
                           if s.channel_key == self.key and s.subscriber_uri is not None),
                          key=lambda s: s.obj.metadata.name)

    # -- data plane (runs on the cluster loop) --------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        namespace, name = self.key
        if request.method == "OPTIONS":
            return Response(200, headers={"allow": "POST, OPTIONS"})
        if request.path.strip("/") not in ("", f"{namespace}/{name}"):
            return json_error(404, f"no channel at path {request.path!r}")
        if request.method != "POST":
            return json_error(405, f"method {request.method} not allowed: send events with POST")
        try:
            event = decode_request(request.headers, request.body, max_body_bytes=_MAX_BODY)
        except EventError as err:
            self.metrics.rejected(namespace, name, err.status)
            return json_error(err.status, err.message)
        self.metrics.accepted(namespace, name)
        self.log.add("accepted", id=event.id, type=event.type, source=event.source)
        for subscription in self._subscriptions():
            task = asyncio.create_task(self._fan_out(subscription, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Response(202)

    async def _fan_out(self, subscription: SubscriptionController, event: Event) -> None:
        assert self._client is not None and subscription.subscriber_uri is not None
        namespace, name = self.key
        route = subscription.obj.metadata.name
        spec = policy.effective_delivery(subscription.delivery_spec(), self._delivery_spec(),
                                         parent_default=None)
        rules = policy.DeliveryPolicy(spec)
        mode = "structured" if spec.format == "json" else "binary"
        dead_letter = subscription.dead_letter_uri if subscription.delivery_spec() is not None \
            else self._dead_letter_uri()

        def note(number: int, result: Attempt, decision: policy.Decision) -> None:
            if isinstance(decision, policy.RetryAt):
                self.metrics.outcome("retried", namespace, name, route)
                self.log.add("retry", id=event.id, type=event.type, trigger=route,
                             attempt=number, status=result.outcome.status,
                             detail=result.outcome.error or f"HTTP {result.outcome.status}")

        sent = await send(self._client, subscription.subscriber_uri, event, rules, mode=mode,
                          namespace=namespace, on_attempt=note)
        decision = sent.decision
        if isinstance(decision, policy.Delivered) and sent.last.reply is not None:
            if subscription.reply_uri is None:
                self.log.add("reply", id=event.id, trigger=route, detail="dropped: no reply set")
            else:
                reply_sent = await send(self._client, subscription.reply_uri, sent.last.reply,
                                        rules, mode=mode, namespace=namespace)
                decision = reply_sent.decision
                self.log.add("reply", id=sent.last.reply.id, trigger=route,
                             detail=f"to {subscription.reply_uri}")
        if isinstance(decision, policy.Delivered):
            self.metrics.outcome("delivered", namespace, name, route)
            self.log.add("delivered", id=event.id, type=event.type, trigger=route,
                         attempt=sent.attempts, status=sent.last.outcome.status)
        elif isinstance(decision, policy.DeadLetter) and dead_letter is not None:
            final = await send(self._client, dead_letter,
                               event.with_attributes(**decision.extensions), rules, mode=mode,
                               namespace=namespace, to_dead_letter_sink=True)
            outcome = "dead_lettered" if isinstance(final.decision, policy.Delivered) \
                else "dropped"
            self.metrics.outcome(outcome, namespace, name, route)
            self.log.add("dead_letter" if outcome == "dead_lettered" else "dropped",
                         id=event.id, type=event.type, trigger=route)
        else:
            self.metrics.outcome("dropped", namespace, name, route)
            reason = decision.reason if isinstance(decision, policy.Drop) else str(decision)
            self.log.add("dropped", id=event.id, type=event.type, trigger=route, detail=reason)

    def _delivery_spec(self) -> policy.DeliverySpec | None:
        model = self.obj.spec.delivery
        return model.parsed() if model is not None else None

    def _dead_letter_uri(self) -> str | None:
        model = self.obj.spec.delivery
        sink = model.dead_letter_sink if model is not None else None
        return try_resolve(self.cluster, sink, self.obj.metadata.namespace)[0]

    def metrics_text(self) -> str:
        return self.metrics.text().decode()


class SubscriptionController(Registered):
    def __init__(self, cluster: LocalCluster, obj: Subscription) -> None:
        self.cluster = cluster
        self.obj = obj
        self.subscriber_uri: str | None = None
        self.reply_uri: str | None = None
        self.dead_letter_uri: str | None = None
        self.problem: str | None = None

    @property
    def channel_key(self) -> tuple[str, str]:
        return (self.obj.spec.channel.namespace or self.obj.metadata.namespace,
                self.obj.spec.channel.name)

    def delivery_spec(self) -> policy.DeliverySpec | None:
        model = self.obj.spec.delivery
        return model.parsed() if model is not None else None

    def apply(self, obj: Subscription) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            current = registry.subscriptions.get(self.key)
            if current is self and obj.spec.channel != self.obj.spec.channel:
                raise ValueError("spec.channel is immutable (Knative refuses the change): "
                                 "delete the Subscription and apply it again")
            self.obj = obj
            self._resolve()
            registry.subscriptions[self.key] = self

    def _resolve(self) -> None:
        spec = self.obj.spec
        sink = spec.delivery.dead_letter_sink if spec.delivery else None
        resolved = {what: try_resolve(self.cluster, destination, self.obj.metadata.namespace)
                    for what, destination in (("subscriber", spec.subscriber), ("reply", spec.reply),
                                              ("dead-letter sink", sink))}
        self.subscriber_uri, self.reply_uri, self.dead_letter_uri = (url for url, _ in resolved.values())
        self.problem = "; ".join(f"{what}: {problem}" for what, (_, problem) in resolved.items() if problem) or None

    def reconcile(self) -> None:
        self._resolve()  # a destination may appear, or move (a Deployment's pod restarted)

    def delete(self) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            registry.subscriptions.pop(self.key, None)

    def status(self) -> ObjectStatus:
        problems = [self.problem] if self.problem else []
        if self.channel_key not in _registry(self.cluster).channels:
            problems.append(f"channel {self.channel_key[1]!r} does not exist (yet)")
        return ObjectStatus(
            kind="Subscription", name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace, ready=not problems,
            message="; ".join(problems) or f"-> {self.subscriber_uri}",
            detail={"physicalSubscription": {"subscriberUri": self.subscriber_uri,
                                             "replyUri": self.reply_uri,
                                             "deadLetterSinkUri": self.dead_letter_uri}})


def channel_handle(cluster: LocalCluster, name: str, namespace: str = "default") -> ChannelController:
    """An InMemoryChannel's controller: url, metrics, event log (`.log.since()`). A generic
    Channel is reached through its backing InMemoryChannel of the same name, a Sequence's or
    Parallel's channels through their owner (see `owned()`)."""
    return cluster.controller("messaging.knative.dev/v1/InMemoryChannel", name, namespace, of=ChannelController)
