"""mesh-demo: one small app that plays every service of the mesh labs (a Bookinfo in miniature).

Built-in image `labkit/mesh-demo`. The manifest decides what a Deployment is with env vars:

- `SERVICE_NAME` (e.g. `frontend`, `backend`) and `VERSION` (`v1`, `v2`): shown in every answer,
  so a student sees which version served a request.
- `UPSTREAMS`: comma-separated URLs by service name (`http://backend:9080/`) the app calls
  for each request it serves, in order; its answer embeds theirs. Without it the app is a leaf.
- `FAIL_PERCENT` (0-100): that share of requests is answered 503 by the app itself (seeded
  by `SEED`), a flaky backend for retries and outlier detection. `DELAY_MS`: answer later.

Calling another service by name needs someone to resolve the name, as in Kubernetes:
- with a sidecar, the app's outbound traffic goes to it: `HTTP_PROXY` names the sidecar's
  outbound listener and requests are sent there in absolute form (what `curl -x` does),
  so routing, retries, mTLS and metrics are the sidecar's business;
- without one, Kubernetes' service environment variables `<NAME>_SERVICE_HOST` /
  `<NAME>_SERVICE_PORT` give the Service's address (kube-proxy then balances over its pods).
  The kubelet (labkit's Deployment controller too) sets them for the Services that exist when
  the pod starts, so the manifest lists the Services first.

Like every app in a mesh, it copies the trace headers (`x-request-id`, `traceparent`, B3 ...)
from the request it serves to the requests it makes: sidecars cannot link spans otherwise.

HTTP: `GET /healthz` answers `ok` without calling anyone (the readiness probe: a probe must not
depend on other services being up); any other path answers JSON `{"service", "version", "pod", "upstreams": [...]}`; an
upstream that answered >= 400 makes this answer carry that status too, so a failure deep in
the call graph is visible at the edge. Run it: `PORT=9080 SERVICE_NAME=backend python -m labkit.apps.mesh_demo`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from labkit.apps.serve import read_head, serve_until_signalled

_UPSTREAM_TIMEOUT = 30.0
# What Istio asks applications to propagate (istio-semantics.md §9), plus Bookinfo's end-user.
PROPAGATED = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
              "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3", "end-user", "user-agent")


@dataclass(frozen=True)
class Config:
    service: str
    version: str
    pod: str
    upstreams: tuple[str, ...]
    fail_percent: float
    delay: float
    proxy: tuple[str, int] | None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        def number(name: str, low: float, high: float) -> float:
            raw = env.get(name, "0") or "0"
            try:
                value = float(raw)
            except ValueError:
                raise SystemExit(f"mesh-demo: {name}={raw!r} is not a number") from None
            if not low <= value <= high:
                raise SystemExit(f"mesh-demo: {name}={raw} must be within {low:g}..{high:g}")
            return value

        upstreams = tuple(u.strip() for u in env.get("UPSTREAMS", "").split(",") if u.strip())
        for url in upstreams:
            if urlsplit(url).scheme != "http" or not urlsplit(url).hostname:
                raise SystemExit(f"mesh-demo: UPSTREAMS entry {url!r} must look like http://service:port/path")
        proxy = env.get("HTTP_PROXY") or env.get("http_proxy")
        proxy_addr = None
        if proxy:
            p = urlsplit(proxy)
            if not p.hostname:
                raise SystemExit(f"mesh-demo: HTTP_PROXY={proxy!r} must look like http://host:port")
            proxy_addr = (p.hostname, p.port or 80)
        return cls(service=env.get("SERVICE_NAME", "demo"), version=env.get("VERSION", "v1"),
                   pod=env.get("HOSTNAME", f"pid-{os.getpid()}"), upstreams=upstreams,
                   fail_percent=number("FAIL_PERCENT", 0, 100), delay=number("DELAY_MS", 0, 60_000) / 1000,
                   proxy=proxy_addr)


def service_address(url: str, env: dict[str, str]) -> tuple[str, int] | None:
    """Kubernetes' service env vars for the URL's host: `backend` -> BACKEND_SERVICE_HOST/PORT."""
    name = (urlsplit(url).hostname or "").split(".")[0].upper().replace("-", "_")
    host, port = env.get(f"{name}_SERVICE_HOST"), env.get(f"{name}_SERVICE_PORT")
    return (host, int(port)) if host and port and port.isdigit() else None


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


async def call(url: str, headers: dict[str, str], config: Config, env: dict[str, str]) -> dict[str, object]:
    """GET `url` by service name (through the sidecar if there is one); a summary of the answer."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if config.proxy is not None:
        where, target = config.proxy, url  # absolute form: the sidecar routes by it
    else:
        found = service_address(url, env)
        if found is None:
            name = (parts.hostname or "").split(".")[0].upper().replace("-", "_")
            return {"url": url, "status": 502, "error": f"cannot resolve {parts.hostname!r}: no sidecar "
                                                        f"(HTTP_PROXY) and no {name}_SERVICE_HOST/PORT"}
        where, target = found, path
    head = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*where), _UPSTREAM_TIMEOUT)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            raw = await asyncio.wait_for(reader.read(), _UPSTREAM_TIMEOUT)
        finally:
            writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        return {"url": url, "status": 502, "error": f"{type(exc).__name__}: {exc}"}
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        return {"url": url, "status": 502, "error": "upstream closed the connection without an HTTP answer"}
    text = body.decode("utf-8", "replace")
    try:
        answer: object = json.loads(text)
    except ValueError:
        answer = text
    return {"url": url, "status": int(status_line[1]), "body": answer}


async def answer(request_headers: dict[str, str], config: Config, rng: random.Random,
                 env: dict[str, str]) -> tuple[int, dict[str, object]]:
    if config.delay:
        await asyncio.sleep(config.delay)
    me: dict[str, object] = {"service": config.service, "version": config.version, "pod": config.pod}
    if config.fail_percent and rng.random() * 100 < config.fail_percent:
        return 503, {**me, "error": f"{config.service} {config.version} failed (FAIL_PERCENT={config.fail_percent:g})"}
    forward = {k: v for k, v in request_headers.items() if k in PROPAGATED}
    results = [await call(url, forward, config, env) for url in config.upstreams]
    status = next((int(r["status"]) for r in results if int(r["status"]) >= 400), 200)  # type: ignore[call-overload]  # call(): an int
    return status, {**me, "upstreams": results} if results else me


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, config: Config,
                 rng: random.Random, env: dict[str, str]) -> None:
    while True:
        lines = await read_head(reader)
        if lines is None:
            return
        parts = lines[0].split()
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        payload: dict[str, object]
        if len(parts) != 3 or not headers.get("content-length", "0").isdigit():
            status, payload, keep_alive = 400, {"error": "bad request line or content-length"}, False
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
            keep_alive = headers.get("connection", "").lower() != "close" and parts[2] == "HTTP/1.1"
            if parts[1].split("?")[0] == "/healthz":
                status, payload = 200, {"status": "ok", "service": config.service, "version": config.version}
            else:
                status, payload = await answer(headers, config, rng, env)
        body = (json.dumps(payload, indent=1) + "\n").encode()
        writer.write((f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nx-demo-version: {config.version}\r\n"
                      f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        if not keep_alive:
            return


async def main() -> None:
    env = dict(os.environ)
    config = Config.from_env(env)
    rng = random.Random(int(env.get("SEED", "0") or 0))
    await serve_until_signalled(lambda r, w: _serve(r, w, config, rng, env), int(env.get("PORT", "8080")))


if __name__ == "__main__":
    asyncio.run(main())
