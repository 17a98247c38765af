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

from labkit.apps.serve import read_head, serve_until_signalled


def _response(status: str, body: bytes, keep_alive: bool, method: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-labkit-pod: {os.getpid()}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    return head if method == "HEAD" else head + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: bytes) -> None:
    while (lines := await read_head(reader)) is not None:
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


async def main() -> None:
    greeting = f"Hello {os.environ.get('TARGET', 'World')}!\n".encode()
    await serve_until_signalled(lambda r, w: _serve(r, w, greeting))


if __name__ == "__main__":
    asyncio.run(main())
