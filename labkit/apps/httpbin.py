"""httpbin: an HTTP test app for serving labs, answering like httpbin.org's main endpoints.

Built-in image ``labkit/httpbin``. Binds 127.0.0.1 on $PORT and starts in tens of milliseconds
(bare asyncio, standard library only), so a cold start measures the platform, not the app.
Every answer carries ``x-labkit-pod: <pid>`` so a student sees which replica served it.

- ``GET /`` — a one-line greeting (readiness probe target).
- ``GET /get``, ``POST /post`` (any method on /anything) — echo method, path, query, headers,
  body as JSON.
- ``GET /headers`` — the request headers; ``GET /ip`` — the client address.
- ``GET /status/{code}`` — answer with that status code (100..599).
- ``GET /delay/{seconds}`` — answer after that many seconds (at most 60); what a concurrency
  limit or a timeout is tested with, as it holds a request without using CPU.
- ``GET /drip?duration=D&numbytes=N&delay=S&code=C`` — as httpbin.org's: after S seconds the
  head (Content-Length N), then N bytes ``*`` spread over D seconds (one every D/N s); what a
  streaming answer and the idle timeout are tested with.
- ``GET /burn?ms=N`` — spin the CPU for N milliseconds (at most 10 000) before answering; a
  CPU-bound request, which blocks this single-threaded replica, like a busy container.

Run it: PORT=8080 python -m labkit.apps.httpbin
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from labkit.apps.serve import read_head, serve_until_signalled

_MAX_DELAY = 60.0
_MAX_BURN_MS = 10_000
_MAX_DRIP_BYTES = 10_000


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _response(code: int, body: bytes, keep_alive: bool, method: str,
              content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {code} {_reason(code)}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-labkit-pod: {os.getpid()}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    return head if method == "HEAD" else head + body


def _json(payload: object) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def _burn(ms: float) -> int:
    """Busy-loop for `ms` milliseconds of wall time; the loop count shows work was done."""
    end = time.perf_counter() + ms / 1000
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


async def _answer(method: str, target: str, headers: dict[str, str], body: bytes,
                  peer: str) -> tuple[int, bytes]:
    url = urlsplit(target)
    path = url.path
    query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(url.query).items()}
    echo = {
        "args": query,
        "headers": headers,
        "method": method,
        "origin": peer,
        "url": target,
        "pid": os.getpid(),
    }
    if path == "/":
        return 200, _json({"app": "httpbin", "pid": os.getpid()})
    if path in ("/get", "/anything") or path.startswith("/anything/"):
        if path == "/get" and method not in ("GET", "HEAD"):
            return 405, _json({"error": f"{method} not allowed on /get (use GET)"})
        return 200, _json({**echo, "data": body.decode("utf-8", "replace")})
    if path == "/post":
        if method != "POST":
            return 405, _json({"error": f"{method} not allowed on /post (use POST)"})
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return 200, _json({**echo, "data": body.decode("utf-8", "replace"), "json": parsed})
    if path == "/headers":
        return 200, _json({"headers": headers})
    if path == "/ip":
        return 200, _json({"origin": peer})
    if path.startswith("/status/"):
        raw = path[len("/status/"):]
        if not raw.isdigit() or not 100 <= int(raw) <= 599:
            return 400, _json({"error": f"status: expected a code 100..599, got {raw!r}"})
        return int(raw), b""
    if path.startswith("/delay/"):
        raw = path[len("/delay/"):]
        try:
            seconds = float(raw)
        except ValueError:
            return 400, _json({"error": f"delay: expected seconds, got {raw!r}"})
        if not 0 <= seconds <= _MAX_DELAY:
            return 400, _json({"error": f"delay: expected 0..{_MAX_DELAY:g} seconds, got {raw}"})
        await asyncio.sleep(seconds)
        return 200, _json({**echo, "delay": seconds})
    if path == "/burn":
        raw = str(query.get("ms", "100"))
        try:
            ms = float(raw)
        except ValueError:
            return 400, _json({"error": f"ms: expected milliseconds, got {raw!r}"})
        if not 0 <= ms <= _MAX_BURN_MS:
            return 400, _json({"error": f"ms: expected 0..{_MAX_BURN_MS}, got {raw}"})
        spins = _burn(ms)
        return 200, _json({"burned_ms": ms, "spins": spins, "pid": os.getpid()})
    return 404, _json({"error": f"path {path!r} not found", "try": [
        "/get", "/post", "/headers", "/ip", "/status/{code}", "/delay/{seconds}", "/drip",
        "/burn?ms=N"]})


def _drip_plan(query: dict[str, str]) -> tuple[int, float, int, float] | bytes:
    """(code, delay, numbytes, pause) of a /drip request, or the JSON of a 400."""
    try:
        duration, delay = float(query.get("duration", "2")), float(query.get("delay", "0"))
        numbytes, code = int(query.get("numbytes", "10")), int(query.get("code", "200"))
    except ValueError:
        return _json({"error": f"drip: expected numbers, got {query}"})
    if not (0 <= duration <= _MAX_DELAY and 0 <= delay <= _MAX_DELAY
            and 1 <= numbytes <= _MAX_DRIP_BYTES and 200 <= code <= 599):
        return _json({"error": f"drip: expected duration and delay 0..{_MAX_DELAY:g} s, "
                               f"numbytes 1..{_MAX_DRIP_BYTES}, code 200..599, got {query}"})
    return code, delay, numbytes, duration / numbytes


async def _drip(writer: asyncio.StreamWriter, plan: tuple[int, float, int, float],
                keep_alive: bool) -> None:
    code, delay, numbytes, pause = plan
    await asyncio.sleep(delay)
    head = _response(code, b"", keep_alive, "HEAD", "application/octet-stream")
    writer.write(head.replace(b"Content-Length: 0", f"Content-Length: {numbytes}".encode()))
    for i in range(numbytes):
        writer.write(b"*")
        await writer.drain()
        if i + 1 < numbytes:
            await asyncio.sleep(pause)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = str((writer.get_extra_info("peername") or ("",))[0])
    while (lines := await read_head(reader)) is not None:
        parts = lines[0].split()
        if len(parts) != 3:
            writer.write(_response(400, _json({"error": "bad request line"}), False, "GET"))
            return
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().title()] = value.strip()
        length = int(headers.get("Content-Length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        connection = headers.get("Connection", "").lower()
        keep_alive = connection != "close" and (
            version == "HTTP/1.1" or connection == "keep-alive")
        url = urlsplit(target)
        if url.path == "/drip":
            plan = _drip_plan({k: v[-1] for k, v in parse_qs(url.query).items()})
            if not isinstance(plan, bytes):
                await _drip(writer, plan, keep_alive)
                if not keep_alive:
                    return
                continue
            writer.write(_response(400, plan, keep_alive, method))
            await writer.drain()
            continue
        code, payload = await _answer(method, target, headers, body, peer)
        writer.write(_response(code, payload, keep_alive, method))
        await writer.drain()
        if not keep_alive:
            return


async def main() -> None:
    await serve_until_signalled(_serve)


if __name__ == "__main__":
    asyncio.run(main())
