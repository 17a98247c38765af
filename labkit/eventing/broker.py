"""The broker's data plane: HTTP ingress + trigger dispatcher over a durable SQLite log.

Runs as its own process, one per Broker, so that killing it (even with SIGKILL) is a real
crash of the data plane:

    python -m labkit.eventing.broker --config broker.json --store events.db   # PORT from env

Ingress (reference §3): POST a CloudEvent to `/` or to Knative's `/<namespace>/<broker>`.
202 only after the event and its fan-out (one delivery per matching trigger) are committed to
the log; requests that arrive together share one commit (`EventStore.append_batch`), and each is
answered after that commit. 400 for anything that is not exactly one valid CloudEvent (JSON body
`{"error": ...}` naming the problem), 404 for another path, 405 for other methods (OPTIONS: 200),
413 over the body limit. The hop counter `knativebrokerttl` is set (255) or decremented, and an
event whose counter runs out is refused; `knativearrivaltime` is added. Nothing else changes.

Dispatcher (reference §5-7): claims due deliveries from the log, POSTs them in binary mode with
`Prefer: reply`, and lets `delivery.DeliveryPolicy` decide: ack, retry at a later time (kept in
the log, so retries survive a crash too), dead-letter sink with the knativeerror* extensions, or
drop. A 2xx carrying an event is a reply: it re-enters this broker as a new event (committed
before the original is acked). Deliveries left in flight by a crash are made again on restart:
at-least-once, duplicates possible, nothing accepted is lost.

Admin endpoints under `/-/` (a namespace can never start with '-'): GET /-/ready, GET
/-/metrics (Prometheus text), GET /-/log?since=N (event log as JSON), GET /-/state (delivery
counts), PUT /-/config (replace brokers' triggers and delivery without a restart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labkit.eventing import SpecError
from labkit.eventing.delivery import (
    DeadLetter,
    Delivered,
    DeliveryPolicy,
    DeliverySpec,
    Drop,
    RetryAt,
    effective_delivery,
    parse_delivery,
)
from labkit.eventing.dispatch import attempt
from labkit.eventing.events import (
    AttributeValue,
    Event,
    EventError,
    attribute_text,
    decode_request,
)
from labkit.eventing.filters import Filter, parse_trigger_filter
from labkit.eventing.metrics import EventingMetrics, EventLog
from labkit.eventing.store import DEAD_LETTER_SINK, Claim, EventStore
from labkit.eventing.wire import (
    Client,
    Request,
    Response,
    json_error,
    json_response,
    serve,
)

__all__ = [
    "ARRIVAL_EXTENSION",
    "MAX_TTL",
    "TTL_EXTENSION",
    "BrokerConfig",
    "BrokerCore",
    "TriggerRoute",
    "main",
    "parse_config",
]

TTL_EXTENSION = "knativebrokerttl"
ARRIVAL_EXTENSION = "knativearrivaltime"
MAX_TTL = 255
_ALLOW = {"allow": "POST, OPTIONS", "webhook-allowed-origin": "*", "webhook-allowed-rate": "*"}
_COMMIT_BATCH = 512


@dataclass(frozen=True)
class TriggerRoute:
    """One trigger as the data plane needs it: filter, where to send, and how."""

    name: str
    filter: Filter
    subscriber: str | None  # None: not resolvable now; deliveries wait in the log
    policy: DeliveryPolicy
    dead_letter: str | None
    mode: str


@dataclass(frozen=True)
class BrokerConfig:
    namespace: str
    name: str
    max_body_bytes: int
    triggers: tuple[TriggerRoute, ...]


def parse_config(raw: Mapping[str, Any]) -> BrokerConfig:
    """The JSON the controller writes: broker identity, delivery, triggers with resolved URLs.

    {"namespace", "name", "maxBodyBytes", "delivery": {...}|null, "deadLetterUri": str|null,
     "triggers": [{"name", "spec": {filter/filters}, "subscriberUri", "delivery",
                   "deadLetterUri"}]}
    Raises SpecError naming the field.
    """
    broker_delivery = parse_delivery(raw.get("delivery"), "delivery")
    routes = []
    for i, trigger in enumerate(raw.get("triggers", [])):
        where = f"triggers[{i}]"
        own = parse_delivery(trigger.get("delivery"), f"{where}.delivery")
        spec: DeliverySpec = effective_delivery(own, broker_delivery)
        # Trigger delivery replaces the broker's wholesale, dead-letter sink included.
        dead_letter = trigger.get("deadLetterUri") if own is not None else raw.get(
            "deadLetterUri")
        routes.append(TriggerRoute(
            name=str(trigger["name"]),
            filter=parse_trigger_filter(trigger.get("spec", {}), f"{where}.spec"),
            subscriber=trigger.get("subscriberUri"),
            policy=DeliveryPolicy(spec),
            dead_letter=dead_letter if spec.dead_letter_sink is not None else None,
            mode="structured" if spec.format == "json" else "binary",
        ))
    return BrokerConfig(str(raw["namespace"]), str(raw["name"]),
                        int(raw.get("maxBodyBytes", 1024 * 1024)), tuple(routes))


def _arrival_time(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_arrival(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class BrokerCore:
    """Ingress, group committer and dispatcher of one broker, on one asyncio loop."""

    def __init__(self, config: BrokerConfig, store: EventStore, *,
                 max_in_flight: int = 256) -> None:
        self.config = config
        self.store = store
        self.metrics = EventingMetrics("broker", "trigger")
        self.log = EventLog()
        self.client = Client()
        self.max_in_flight = max_in_flight
        self._routes = {route.name: route for route in config.triggers}
        self._pending: list[tuple[Event, list[str], asyncio.Future[int]]] = []
        self._commit_wanted = asyncio.Event()
        self._wake = asyncio.Event()
        self._acks: list[tuple[int, str, int | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- configuration ------------------------------------------------------------------------

    def reconfigure(self, config: BrokerConfig) -> None:
        self.config = config
        self._routes = {route.name: route for route in config.triggers}
        self._wake.set()  # a trigger may have become resolvable

    # -- ingress ------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if request.path.startswith("/-/"):
            return await self._admin(request)
        if request.method == "OPTIONS":
            return Response(200, headers=dict(_ALLOW))
        if not self._is_ingress_path(request.path):
            return self._reject(404, f"no broker at path {request.path!r}: POST to / or to "
                                     f"/{self.config.namespace}/{self.config.name}")
        if request.method != "POST":
            return Response(405, json.dumps({"error": f"method {request.method} not allowed: "
                                             "send events with POST"}).encode(),
                            {"content-type": "application/json", **_ALLOW})
        try:
            event = decode_request(request.headers, request.body,
                                   max_body_bytes=self.config.max_body_bytes)
        except EventError as err:
            return self._reject(err.status, err.message)
        try:
            await self.accept(event)
        except EventError as err:
            return self._reject(err.status, err.message)
        return Response(202)

    def _is_ingress_path(self, path: str) -> bool:
        trimmed = path.strip("/")
        return trimmed == "" or trimmed == f"{self.config.namespace}/{self.config.name}"

    def _reject(self, status: int, message: str) -> Response:
        self.metrics.rejected(self.config.namespace, self.config.name, status)
        self.log.add("rejected", status=status, detail=message)
        return json_error(status, message)

    async def accept(self, event: Event, *, reply_to: str | None = None) -> int:
        """Stamp, route and durably log `event`; returns its log id once committed.

        Raises EventError(400) when the hop counter runs out (a reply loop).
        """
        ttl_value = event.attributes.get(TTL_EXTENSION)
        if ttl_value is None:
            ttl = MAX_TTL
        else:
            try:
                ttl = int(attribute_text(ttl_value)) - 1
            except ValueError:
                raise EventError(400, f"extension {TTL_EXTENSION} must be an integer, got "
                                      f"{ttl_value!r}", attribute=TTL_EXTENSION) from None
        if ttl <= 0:
            raise EventError(400, f"{TTL_EXTENSION} exhausted: the event went through this "
                                  f"broker {MAX_TTL} times (a trigger replying to itself?)",
                             attribute=TTL_EXTENSION)
        stamps: dict[str, AttributeValue | None] = {TTL_EXTENSION: ttl,
                                                    ARRIVAL_EXTENSION: _arrival_time(time.time())}
        event = event.with_attributes(**stamps)
        matched = [route.name for route in self.config.triggers if route.filter.matches(event)]
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((event, matched, future))
        self._commit_wanted.set()
        event_id = await future
        self.metrics.accepted(self.config.namespace, self.config.name)
        self.log.add("reply" if reply_to else "accepted", event=event_id, id=event.id,
                     type=event.type, source=event.source, trigger=reply_to,
                     detail="matched " + (",".join(matched) or "no trigger"))
        return event_id

    async def commit_loop(self) -> None:
        """Group commit: everything that arrived since the last commit goes in one transaction,
        then each waiting request is answered (202 strictly after its commit)."""
        while not self._stopping:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            while self._pending:
                batch, self._pending = (self._pending[:_COMMIT_BATCH],
                                        self._pending[_COMMIT_BATCH:])
                broker = self.config.name
                try:
                    ids = self.store.append_batch([(e, broker, m) for e, m, _ in batch])
                except (sqlite3.Error, OSError) as err:  # a disk error: refuse, never pretend
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(EventError(500, f"could not log event: {err}"))
                    continue
                for (_, _, future), event_id in zip(batch, ids):
                    if not future.done():
                        future.set_result(event_id)
                self._wake.set()
            await asyncio.sleep(0)  # let the answered requests write before the next commit

    # -- dispatch -----------------------------------------------------------------------------

    async def dispatch_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._flush_acks()
            room = self.max_in_flight - len(self._tasks)
            if room <= 0:
                await self._wake.wait()  # full: wait for a delivery to end
                continue
            claims = self.store.claim(time.time(), limit=room)
            for claim in claims:
                task = asyncio.create_task(self._deliver(claim))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            if claims:
                await asyncio.sleep(0)  # let the deliveries start; more may be due
                continue
            due = self.store.next_due()
            delay = 1.0 if due is None else min(max(due - time.time(), 0.0), 1.0)
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            print(f"delivery task failed: {task.exception()!r}", file=sys.stderr)

    def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            self.store.ack_batch(acks)

    async def _deliver(self, claim: Claim) -> None:
        route = self._routes.get(claim.trigger)
        namespace, broker = self.config.namespace, self.config.name
        to_dls = claim.target == DEAD_LETTER_SINK
        if route is None:
            self.store.drop(claim.event_id, claim.trigger, error="trigger deleted")
            self.log.add("dropped", event=claim.event_id, id=claim.event.id, trigger=claim.trigger,
                         detail="trigger deleted")
            return
        url = route.dead_letter if to_dls else route.subscriber
        if url is None:
            # Not resolvable yet: keep it in the log and look again later (Knative keeps the
            # trigger not-Ready; events wait rather than being lost).
            self.store.retry(claim.event_id, claim.trigger, time.time() + 0.5,
                             error="subscriber not resolved")
            return
        outgoing = claim.event.with_attributes(**{TTL_EXTENSION: None})
        result = await attempt(self.client, url, outgoing, timeout=route.policy.attempt_timeout,
                               mode=route.mode, namespace=namespace)
        now = time.time()
        decision = route.policy.decide(claim.attempt, result.outcome, now,
                                       route.subscriber or url, to_dead_letter_sink=to_dls)
        base = {"event": claim.event_id, "id": claim.event.id, "type": claim.event.type,
                "trigger": claim.trigger, "attempt": claim.attempt,
                "status": result.outcome.status}
        if isinstance(decision, Delivered):
            if result.reply is not None and not to_dls:
                await self._reenter(result.reply, claim)
            self._acks.append((claim.event_id, claim.trigger, result.outcome.status))
            arrival = claim.event.attributes.get(ARRIVAL_EXTENSION)
            accepted_at = _parse_arrival(str(arrival)) if arrival is not None else None
            latency = None if accepted_at is None else now - accepted_at
            what = "dead_lettered" if to_dls else "delivered"
            self.metrics.outcome(what, namespace, broker, claim.trigger, latency)
            self.log.add("dead_letter" if to_dls else "delivered", **base,
                         detail=f"to {'dead-letter sink' if to_dls else 'subscriber'}")
        elif isinstance(decision, RetryAt):
            self.store.retry(claim.event_id, claim.trigger, decision.at,
                             status=result.outcome.status, error=result.outcome.error)
            self.metrics.outcome("retried", namespace, broker, claim.trigger)
            self.log.add("retry", **base, detail=f"{_why(result.outcome)}; next try in "
                                                 f"{decision.wait:.3g} s")
        elif isinstance(decision, DeadLetter):
            self.store.dead_letter(claim.event_id, claim.trigger, decision.extensions,
                                   status=result.outcome.status, error=result.outcome.error)
            self.log.add("dead_letter_queued", **base, detail=_why(result.outcome))
        else:
            assert isinstance(decision, Drop)
            self.store.drop(claim.event_id, claim.trigger, status=result.outcome.status,
                            error=decision.reason)
            self.metrics.outcome("dropped", namespace, broker, claim.trigger)
            self.log.add("dropped", **base, detail=decision.reason)
        self._wake.set()

    async def _reenter(self, reply: Event, claim: Claim) -> None:
        """A reply goes back into the broker as a new event, carrying the original's hop count
        (so a trigger that keeps answering itself stops after MAX_TTL hops)."""
        ttl = claim.event.attributes.get(TTL_EXTENSION)
        reply = reply.with_attributes(**{TTL_EXTENSION: ttl, ARRIVAL_EXTENSION: None})
        try:
            await self.accept(reply, reply_to=claim.trigger)
        except EventError as err:
            self.log.add("dropped", event=claim.event_id, id=reply.id, trigger=claim.trigger,
                         detail=f"reply refused: {err.message}")

    # -- admin --------------------------------------------------------------------------------

    async def _admin(self, request: Request) -> Response:
        path = request.path
        if path == "/-/ready" and request.method == "GET":
            return Response(200, b"ready\n")
        if path == "/-/metrics" and request.method == "GET":
            return Response(200, self.metrics.text(),
                            {"content-type": "text/plain; version=0.0.4"})
        if path == "/-/log" and request.method == "GET":
            since = 0
            for part in request.query.split("&"):
                if part.startswith("since=") and part[6:].isdigit():
                    since = int(part[6:])
            return json_response(200, self.log.since(since))
        if path == "/-/state" and request.method == "GET":
            return json_response(200, {"pid": os.getpid(), "counts": self.store.counts(),
                                       "triggers": {name: self.store.counts(name)
                                                    for name in self._routes}})
        if path == "/-/config" and request.method == "PUT":
            try:
                self.reconfigure(parse_config(json.loads(request.body)))
            except (SpecError, ValueError, KeyError, TypeError) as err:
                return json_error(400, f"bad broker config: {err}")
            return json_response(200, {"triggers": sorted(self._routes)})
        return json_error(404, f"no admin endpoint {request.method} {path}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._commit_wanted.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._flush_acks()
        self.client.close()


def _why(outcome: Any) -> str:
    return f"HTTP {outcome.status}" if outcome.status is not None else str(outcome.error)


async def _run(config_path: Path, store_path: Path, port: int) -> None:
    config = parse_config(json.loads(config_path.read_text()))
    store = EventStore(store_path)
    core = BrokerCore(config, store)
    server = await serve(core.handle, port=port, max_body=config.max_body_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    workers = [asyncio.create_task(core.commit_loop()), asyncio.create_task(core.dispatch_loop())]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*workers, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and (error := task.exception()) is not None:
            raise error
    server.close()
    await core.stop()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="labkit broker data plane (one broker)")
    parser.add_argument("--config", required=True, type=Path, help="broker JSON config")
    parser.add_argument("--store", required=True, type=Path, help="SQLite event log file")
    args = parser.parse_args(argv)
    raw_port = os.environ.get("PORT", "")
    if not raw_port.isdigit():
        sys.exit(f"labkit.eventing.broker: PORT must be a port number, got {raw_port!r}")
    work = _run(args.config, args.store, int(raw_port))
    try:
        import uvloop  # the same semantics, a faster loop when installed
    except ImportError:
        asyncio.run(work)
    else:
        uvloop.run(work)


if __name__ == "__main__":
    main()
