"""How a Bookinfo service calls another: GET by service name, with the caller's own timeout,
passing on the request headers the caller propagates.

The real services use Python requests (productpage, `timeout=3.0`) and a JAX-RS client
(reviews, connection and receive timeouts): when the timeout passes the call raises and the
service treats it like a failed answer. `get_json` returns None in that case, and for a
refused or broken connection.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from labkit import http1
from labkit.apps.mesh_demo import service_address

__all__ = ["PORT", "TRACE_HEADERS", "forwarded", "get_json", "service_url"]

PORT = 9080
"""Every Bookinfo Service's port (istio/istio samples/bookinfo/platform/kube/bookinfo.yaml);
the services build their URLs with it (productpage.py `http://{0}{1}:9080`)."""

TRACE_HEADERS = (
    # The headers Bookinfo's services propagate for tracing and logging (productpage.py
    # getForwardHeaders, LibertyRestEndpoint.java headers_to_propagate, details.rb), which
    # https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/ asks every
    # app to copy from the request it serves to the requests it makes.
    "x-request-id", "x-ot-span-context", "x-datadog-trace-id", "x-datadog-parent-id",
    "x-datadog-sampling-priority", "traceparent", "tracestate", "x-cloud-trace-context",
    "grpc-trace-bin", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags", "b3", "sw8",
)


def service_url(name_variable: str, default: str, path: str, env: Mapping[str, str]) -> str:
    """`http://<name><.SERVICES_DOMAIN>:9080<path>`: the service name may be overridden by
    `name_variable` (DETAILS_HOSTNAME, REVIEWS_HOSTNAME, RATINGS_HOSTNAME), as in the apps."""
    domain = f".{env['SERVICES_DOMAIN']}" if env.get("SERVICES_DOMAIN") else ""
    return f"http://{env.get(name_variable) or default}{domain}:{PORT}{path}"


def forwarded(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> dict[str, str]:
    """The request's fields named in `names` (case-insensitive), first value of each."""
    wanted = {name.lower() for name in names}
    out: dict[str, str] = {}
    for name, value in headers:
        if name.lower() in wanted and name.lower() not in out:
            out[name.lower()] = value
    return out


async def _exchange(where: tuple[str, int], head: list[str]) -> http1.Response:
    reader, writer = await asyncio.open_connection(*where, limit=http1.MAX_HEAD)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        return await http1.read_response(reader, "GET")
    finally:
        writer.close()


async def get_json(url: str, headers: Mapping[str, str], timeout: float,
                   env: Mapping[str, str] | None = None) -> tuple[int, Any] | None:
    """GET `url` through the pod's sidecar ($HTTP_PROXY, the URL in absolute form so the sidecar
    routes by the service name) or, without one, at the Service's address from the link
    variables. (status, the JSON body or None) or None: no answer within `timeout` seconds."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    proxy = env.get("HTTP_PROXY") or env.get("http_proxy")
    if proxy:
        where: tuple[str, int] | None = (urlsplit(proxy).hostname or "127.0.0.1",
                                         urlsplit(proxy).port or 80)
        target = url
    else:
        where, target = service_address(url, dict(env)), parts.path or "/"
    if where is None:
        return None  # the name resolves to nothing: requests' ConnectionError
    head = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json",
            "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    try:
        # wait_for, not `async with asyncio.timeout()`: that is Python 3.11's, and labkit runs on 3.10
        # (where wait_for's asyncio.TimeoutError is not yet the builtin TimeoutError).
        response = await asyncio.wait_for(_exchange(where, head), timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, http1.HttpError):
        return None
    try:
        return response.status, json.loads(response.body)
    except ValueError:
        return response.status, None
