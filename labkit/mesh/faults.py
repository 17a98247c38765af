"""Fault injection (VirtualService `http[].fault`): delay and abort decisions, seeded.

Semantics (https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection,
https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/fault_filter):
- Applied by the *caller's* sidecar, after the route is chosen and before the router, so an
  abort never reaches the server, is never retried, never counts for outlier detection, and a
  delay runs before the route `timeout` starts.
- `percentage.value` is a double 0-100; **absent means 0 %** (API text since Nov 2022, istiod
  translates a missing percentage to 0). The deprecated integer `delay.percent` is honoured
  when `percentage` is absent. Envoy samples in parts per million, so 0.1 % works.
- Delay and abort are sampled independently; when both fire the delay comes first.
- `exponentialDelay` is accepted but ignored (istiod only warns); `http2Error` aborts are not
  translated by istiod, so they never fire here either.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.mesh import flags, spec

__all__ = ["GRPC_CODES", "FaultDecision", "FaultPolicy"]

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


@dataclass(frozen=True)
class FaultDecision:
    """What the fault filter does to one request: wait `delay` seconds, then maybe `abort`."""

    delay: float = 0.0
    abort: flags.LocalReply | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """DI and/or FI, to be merged into the request's response flags."""
        out: tuple[str, ...] = (flags.DELAY_INJECTED,) if self.delay > 0 else ()
        return out + (self.abort.flags if self.abort else ())


NO_FAULT = FaultDecision()


@dataclass(frozen=True)
class FaultPolicy:
    """A route's `fault` block: `delay_fraction`/`abort_fraction` are 0..1."""

    delay: float = 0.0
    delay_fraction: float = 0.0
    abort: flags.LocalReply | None = None
    abort_fraction: float = 0.0

    @classmethod
    def from_spec(cls, value: Mapping[str, Any] | None, path: str = "fault") -> FaultPolicy:
        """Build from Istio's `HTTPFaultInjection` dict:

        `{delay: {fixedDelay: "5s", percentage: {value: 10}}, abort: {httpStatus: 503 |
        grpcStatus: "UNAVAILABLE", percentage: {value: 50}}}`
        """
        fault = spec.mapping(value, path)
        spec.check_keys(fault, ("delay", "abort"), path)
        delay, delay_fraction = 0.0, 0.0
        if fault.get("delay") is not None:
            dpath = spec.join(path, "delay")
            d = spec.mapping(fault["delay"], dpath)
            spec.check_keys(d, ("fixedDelay", "exponentialDelay", "percentage", "percent"), dpath)
            if d.get("fixedDelay") is None and d.get("exponentialDelay") is None:
                raise spec.SpecError(spec.join(dpath, "fixedDelay"), "is required")
            delay = spec.duration(d.get("fixedDelay"), spec.join(dpath, "fixedDelay"),
                                  default=0.0, minimum=0.001)
            if d.get("percentage") is None and d.get("percent") is not None:
                delay_fraction = spec.integer(d["percent"], spec.join(dpath, "percent"), default=0,
                                              minimum=0, maximum=100) / 100.0
            else:
                delay_fraction = spec.percentage(d.get("percentage"), spec.join(dpath, "percentage"),
                                                 default=0.0)
        abort, abort_fraction = None, 0.0
        if fault.get("abort") is not None:
            apath = spec.join(path, "abort")
            a = spec.mapping(fault["abort"], apath)
            spec.check_keys(a, ("httpStatus", "grpcStatus", "http2Error", "percentage"), apath)
            kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if a.get(k) is not None]
            if len(kinds) != 1:
                raise spec.SpecError(apath, "set exactly one of httpStatus, grpcStatus, http2Error"
                                       f" (got {kinds or 'none'})")
            if "httpStatus" in kinds:
                status = spec.integer(a["httpStatus"], spec.join(apath, "httpStatus"), default=0,
                                      minimum=200, maximum=599)
                abort = flags.fault_abort(status)
            elif "grpcStatus" in kinds:
                name = spec.string(a["grpcStatus"], spec.join(apath, "grpcStatus"))
                if name not in GRPC_CODES:
                    raise spec.SpecError(spec.join(apath, "grpcStatus"),
                                    f"unknown gRPC status {name!r}; one of {', '.join(GRPC_CODES)}")
                abort = flags.fault_abort(200, GRPC_CODES[name])
            abort_fraction = spec.percentage(a.get("percentage"), spec.join(apath, "percentage"),
                                             default=0.0)
        return cls(delay, delay_fraction, abort, abort_fraction)

    def decide(self, rng: random.Random) -> FaultDecision:
        """Sample this request's delay and abort independently from `rng`."""
        delayed = spec.sample(rng, self.delay_fraction) if self.delay > 0 else False
        aborted = spec.sample(rng, self.abort_fraction) if self.abort is not None else False
        if not delayed and not aborted:
            return NO_FAULT
        return FaultDecision(self.delay if delayed else 0.0, self.abort if aborted else None)

