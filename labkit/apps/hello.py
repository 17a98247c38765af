"""hello: the smallest useful workload, like Knative's helloworld-go sample.

Answers every request with "Hello {TARGET}!" on the port in $PORT (8080 if unset, as in the
sample), bound to 127.0.0.1. Written on bare asyncio so it starts in a few tens of
milliseconds: lab 01 measures its cold start, and a heavy framework would dominate the number.
The `x-labkit-pod` header carries the process id, so a student can see which replica answered.

Run it: PORT=8080 TARGET=labkit python -m labkit.apps.hello
"""

from __future__ import annotations

import asyncio
import os
import signal

_MAX_HEAD = 64 * 1024


def _response(status: str, body: bytes, keep_alive: bool, method: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-labkit-pod: {os.getpid()}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    return head if method == "HEAD" else head + body


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    greeting: bytes,
    open_writers: set[asyncio.StreamWriter],
) -> None:
    open_writers.add(writer)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                writer.write(_response("400 Bad Request", b"bad request line\n", False, "GET"))
                return
            method, _target, version = parts
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)  # drain the body so keep-alive stays in sync
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                version == "HTTP/1.1" or connection == "keep-alive"
            )
            writer.write(_response("200 OK", greeting, keep_alive, method))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        open_writers.discard(writer)
        writer.close()


async def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    greeting = f"Hello {os.environ.get('TARGET', 'World')}!\n".encode()
    open_writers: set[asyncio.StreamWriter] = set()
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, greeting, open_writers), "127.0.0.1", port, limit=_MAX_HEAD
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Stop accepting, then drop idle keep-alive connections: a client holding one open
    # must not keep a terminated pod alive (Python >= 3.12 waits for them in wait_closed).
    server.close()
    for writer in list(open_writers):
        writer.close()
    await asyncio.wait_for(server.wait_closed(), timeout=2.0)


if __name__ == "__main__":
    asyncio.run(main())
