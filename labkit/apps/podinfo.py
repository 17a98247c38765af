"""podinfo: the app Flagger's tutorials roll out, with the endpoints they and its load tester use.

Built-in image ``labkit/podinfo`` (run for ``ghcr.io/stefanprodan/podinfo``, see
labkit.core.images). It answers like podinfo's HTTP API (stefanprodan/podinfo README "API" and
pkg/api/http/*.go), on 127.0.0.1:$PORT (podinfo's own default port is 9898):

- ``GET /`` — runtime information as JSON (hostname, version, color, message, ...), what
  Flagger's load test (``hey ... http://podinfo-canary.test:9898/``) requests.
- ``GET /version`` — ``{"version", "commit"}``.
- ``GET /healthz``, ``GET /readyz`` — ``{"status": "OK"}``; ``POST /readyz/disable`` makes
  /readyz answer 503 (and ``POST /readyz/enable`` 200 again), as podinfo does for draining.
- ``GET /status/{code}`` — answers ``{"status": code}`` with that status code.
- ``GET /delay/{seconds}`` — answers ``{"delay": seconds}`` after that many seconds.
- ``GET /env`` — the environment as a JSON list of ``NAME=value``; ``GET /headers`` — the
  request headers; ``POST /echo`` — the request body back.
- ``POST /token`` — ``{"token", "expires_at"}`` (the tutorial's acceptance test only checks
  that a token comes back; this one is not a signed JWT).
- ``GET /panic`` — the process exits with code 255, a crash to watch the platform react to.

PODINFO_UI_COLOR and PODINFO_UI_MESSAGE set "color" and "message", as podinfo's --ui-color and
--ui-message flags do through the environment.

Run it: PORT=9898 python -m labkit.apps.podinfo
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

from labkit import http1
from labkit.apps.serve import answering, serve_until_signalled

VERSION = "6.5.4"
"""The podinfo release whose API this mirrors (the image labkit.core.images exports)."""
_MAX_DELAY = 60.0
_JSON = "application/json; charset=utf-8"


class _State:
    ready = True


def _json(status: int, payload: object) -> tuple[int, str, bytes]:
    return status, _JSON, (json.dumps(payload, indent=2) + "\n").encode()


def _info() -> dict[str, object]:
    return {
        "hostname": os.environ.get("HOSTNAME", socket.gethostname()),
        "version": VERSION,
        "revision": "labkit",
        "color": os.environ.get("PODINFO_UI_COLOR", "#34577c"),
        "logo": "",
        "message": os.environ.get("PODINFO_UI_MESSAGE", f"greetings from podinfo v{VERSION}"),
        "runtime": "python",
        "num_cpu": str(os.cpu_count() or 1),
    }


async def answer(request: http1.Request) -> tuple[int, str, bytes]:
    path = request.target.split("?", 1)[0].rstrip("/") or "/"
    method = request.method
    if path == "/":
        return _json(200, _info())
    if path == "/version":
        return _json(200, {"version": VERSION, "commit": "labkit"})
    if path == "/healthz":
        return _json(200, {"status": "OK"})
    if path == "/readyz":
        return _json(200, {"status": "OK"}) if _State.ready else _json(503, {"status": "Not ready"})
    if path in ("/readyz/enable", "/readyz/disable") and method == "POST":
        _State.ready = path.endswith("enable")
        return 202, _JSON, b""
    if path.startswith("/status/"):
        raw = path.removeprefix("/status/")
        if not raw.isdigit() or not 100 <= int(raw) <= 599:
            return _json(400, {"error": f"status: expected a code 100..599, got {raw!r}"})
        return _json(int(raw), {"status": int(raw)})
    if path.startswith("/delay/"):
        raw = path.removeprefix("/delay/")
        try:
            seconds = float(raw)
        except ValueError:
            return _json(400, {"error": f"delay: expected seconds, got {raw!r}"})
        if not 0 <= seconds <= _MAX_DELAY:
            return _json(400, {"error": f"delay: expected 0..{_MAX_DELAY:g} seconds, got {raw}"})
        await asyncio.sleep(seconds)
        return _json(200, {"delay": seconds})
    if path == "/env":
        return _json(200, [f"{k}={v}" for k, v in sorted(os.environ.items())])
    if path == "/headers":
        headers: dict[str, list[str]] = {}
        for name, value in request.headers:
            headers.setdefault(name.title(), []).append(value)
        return _json(200, headers)
    if path == "/echo" and method in ("POST", "PUT"):
        return 202, request.header("content-type") or "text/plain", request.body
    if path == "/token" and method == "POST":
        expires = time.time() + 60  # podinfo's tokens are valid for one minute
        return _json(200, {"token": os.urandom(16).hex(), "expires_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))})
    if path == "/panic":
        os._exit(255)
    return _json(404, {"error": f"path {path!r} not found"})


async def main() -> None:
    await serve_until_signalled(answering(answer))


if __name__ == "__main__":
    asyncio.run(main())
