"""Flagger's webhooks over real HTTP: a POST of its JSON payload, pass when the answer is 2xx.

As fluxcd/flagger pkg/controller/webhook.go (CallWebhook): body `{"name", "namespace", "phase",
"checksum", "metadata"}`, Content-Type application/json, timeout `webhook.timeout` (10s when
unset), a status above 202 fails and its body becomes the message in the Halt event; `retries`
more attempts after a failure.

There is no cluster DNS on a laptop, so a URL naming a Service (`http://flagger-loadtester.test/`,
`http://gate.default.svc.cluster.local/check`) is sent to that Service's local address, found
by `resolve`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from labkit.flagger.analysis import HookResult
from labkit.flagger.models import Canary, CanaryWebhook, go_duration

__all__ = ["DEFAULT_TIMEOUT", "call", "payload", "service_of_host"]

DEFAULT_TIMEOUT = 10.0

Resolver = Callable[[str, str], "str | None"]
"""(service name, namespace) -> http://127.0.0.1:PORT of that Service, or None."""


def service_of_host(host: str, namespace: str) -> tuple[str, str] | None:
    """(service, namespace) a cluster host name means: `svc`, `svc.ns`, `svc.ns.svc`,
    `svc.ns.svc.cluster.local`; None for an address (127.0.0.1, localhost) or other names."""
    if host in ("localhost",) or host.replace(".", "").isdigit():
        return None
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], namespace
    if len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"]):
        return parts[0], parts[1]
    return None


def payload(canary: Canary, phase: str, checksum: str, hook: CanaryWebhook) -> dict[str, object]:
    return {"name": canary.metadata.name, "namespace": canary.metadata.namespace, "phase": phase,
            "checksum": checksum, "metadata": dict(hook.metadata)}


def _target(url: str, namespace: str, resolve: Resolver) -> str:
    parts = urlsplit(url)
    named = service_of_host(parts.hostname or "", namespace)
    if named is None:
        return url
    base = resolve(*named)
    if base is None:
        return url
    return urlunsplit(urlsplit(base)[:2] + parts[2:])


def call(canary: Canary, hook: CanaryWebhook, phase: str, checksum: str, resolve: Resolver) -> HookResult:
    """POST the payload to `hook.url`; ok for status <= 202."""
    timeout = go_duration(hook.timeout, ()) if hook.timeout else DEFAULT_TIMEOUT
    body = json.dumps(payload(canary, phase, checksum, hook)).encode()
    url = _target(hook.url, canary.metadata.namespace, resolve)
    result = HookResult(False, "")
    for _ in range(1 + (hook.retries or 0)):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        except (OSError, ValueError) as exc:  # refused, timed out, bad URL
            result = HookResult(False, f"Post {hook.url!r}: {getattr(exc, 'reason', exc)}")
            continue
        if status <= 202:
            return HookResult(True, text)
        result = HookResult(False, text.strip() or f"status {status}")
    return result
