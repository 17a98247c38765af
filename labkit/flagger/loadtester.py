"""Flagger's load tester (ghcr.io/fluxcd/flagger-loadtester) for labkit: built-in image
``labkit/flagger-loadtester``.

The contract (fluxcd/flagger pkg/loadtester/server.go, runner.go, task_shell.go): Flagger POSTs
its webhook payload `{name, namespace, phase, checksum, metadata}`; `metadata.cmd` is a command
the tester starts in the background (202 Accepted at once; the same command for the same
canary is not started twice while it runs); no metadata is a 400. labkit runs `hey` commands
with its own load generator (labkit.load) instead of a shell: `hey -z 1m -q 10 -c 2
http://podinfo-canary.test:9898/` means 2 workers at 10 requests/s each for a minute (hey's -q
is per worker). Requests go through this pod's sidecar when it has one ($HTTP_PROXY), so they
reach `podinfo-canary` by name, as in the cluster. Also the gates of the tester:
/gate/approve (200), /gate/halt (403), /gate/check, /gate/open, /gate/close, and
/rollback/check, /rollback/open, /rollback/close (per canary, closed until opened).

Run it: PORT=8080 python -m labkit.flagger.loadtester
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from labkit import load
from labkit.apps.serve import read_head, serve_until_signalled

__all__ = ["HeyCommand", "parse_hey"]


@dataclass(frozen=True)
class HeyCommand:
    url: str
    requests: int | None = None
    duration: float | None = None
    concurrency: int = 50
    qps_per_worker: float = 0.0
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    timeout: float = 20.0
    keepalive: bool = True


_VALUE_FLAGS = {"-n", "-c", "-q", "-z", "-m", "-H", "-d", "-t", "-host", "-T", "-A", "-o", "-cpus"}


def parse_hey(cmd: str) -> HeyCommand:
    """A `hey` command line as hey reads it; ValueError says what is wrong."""
    words = shlex.split(cmd)
    if not words or os.path.basename(words[0]) != "hey":
        raise ValueError("labkit's load tester runs hey commands "
                         f"(e.g. 'hey -z 1m -q 10 -c 2 URL'), got {cmd!r}")
    opts: dict[str, list[str]] = {}
    positional: list[str] = []
    flags: set[str] = set()
    i = 1
    while i < len(words):
        word = words[i]
        if word in _VALUE_FLAGS:
            if i + 1 >= len(words):
                raise ValueError(f"hey flag {word} needs a value")
            opts.setdefault(word, []).append(words[i + 1])
            i += 2
        elif word.startswith("-"):
            flags.add(word)
            i += 1
        else:
            positional.append(word)
            i += 1
    if len(positional) != 1 or urlsplit(positional[0]).scheme not in ("http", "https"):
        raise ValueError(f"hey needs exactly one http:// URL, got {positional or 'none'}")
    headers = {}
    for text in opts.get("-H", []):
        name, sep, value = text.partition(":")
        if not sep:
            raise ValueError(f"hey -H {text!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    if "-host" in opts:
        headers["Host"] = opts["-host"][-1]
    if "-T" in opts:
        headers["Content-Type"] = opts["-T"][-1]

    def last(flag: str) -> str | None:
        return opts[flag][-1] if flag in opts else None

    z = last("-z")
    duration = load.parse_duration(z) if z else None
    requests = None if duration else int(last("-n") or 200)  # -z wins; hey's -n default is 200
    return HeyCommand(
        url=positional[0], requests=requests, duration=duration,
        concurrency=int(last("-c") or 50), qps_per_worker=float(last("-q") or 0),
        method=last("-m") or "GET", headers=headers, body=last("-d") or "",
        timeout=float(last("-t") or 20), keepalive="-disable-keepalive" not in flags)


class _Tester:
    def __init__(self) -> None:
        self.running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.gates: set[str] = set()

    async def start(self, canary: str, cmd: str) -> tuple[int, str]:
        try:
            hey = parse_hey(cmd)
        except ValueError as exc:
            return 400, str(exc)
        key = (canary, cmd)
        task = self.running.get(key)
        if task is not None and not task.done():
            return 202, "command already running"
        self.running[key] = asyncio.create_task(self._run(hey))
        return 202, ""

    @staticmethod
    async def _run(hey: HeyCommand) -> None:
        await load.run_async(
            hey.url, requests=hey.requests, duration=hey.duration, concurrency=hey.concurrency,
            qps=hey.qps_per_worker * hey.concurrency, method=hey.method, headers=hey.headers,
            body=hey.body, proxy=os.environ.get("HTTP_PROXY") or None, keepalive=hey.keepalive,
            timeout=hey.timeout)

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        if path == "/healthz":
            return 200, "OK"
        if path == "/gate/approve":
            return 200, "OK"
        if path == "/gate/halt":
            return 403, "Forbidden"
        try:
            payload = json.loads(body or b"{}")
            canary = f"{payload['name']}.{payload['namespace']}"
        except (ValueError, KeyError, TypeError):
            return 400, "decoding the request body failed"
        for prefix, gate in (("/gate/", canary), ("/rollback/", f"rollback.{canary}")):
            if path.startswith(prefix):
                action = path[len(prefix):]
                if action == "check":
                    return (200, "Approved") if gate in self.gates else (403, "Forbidden")
                if action == "open":
                    self.gates.add(gate)
                    return 202, ""
                if action == "close":
                    self.gates.discard(gate)
                    return 202, ""
                return 404, "not found"
        metadata = payload.get("metadata") or {}
        if not metadata:
            return 400, "metadata not found in payload"
        kind = metadata.get("type", "cmd")
        if kind != "cmd":
            return 400, f"labkit's load tester runs 'cmd' tasks, got type {kind!r}"
        return await self.start(canary, metadata.get("cmd", ""))


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tester: _Tester) -> None:
    while True:
        head = await read_head(reader)
        if head is None:
            return
        method, target, _ = (head[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        status, text = await tester.handle(method, urlsplit(target).path, body)
        data = text.encode()
        reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()


async def main() -> None:
    tester = _Tester()
    await serve_until_signalled(lambda r, w: _serve(r, w, tester))


if __name__ == "__main__":
    asyncio.run(main())
