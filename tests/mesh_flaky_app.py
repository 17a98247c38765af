"""A deliberately unreliable upstream for the sidecar tests (run as a Deployment's command).

- `GET /flaky`: answers 503 and 200 in turn, starting with 503 (a per-process counter, so the
  outcome of each try is deterministic: one retry always hides the failure).
- `GET /reset`: closes the connection without answering (an upstream that resets).
- `GET /count`: how many /flaky requests arrived.
- anything else: 200 "ok" (the readiness probe).
"""

from __future__ import annotations

import asyncio
import os

_flaky = 0


def _reply(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
            f"x-labkit-pod: {os.getpid()}\r\n\r\n").encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global _flaky
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            if target == "/reset":
                return
            if target == "/flaky":
                _flaky += 1
                writer.write(_reply("503 Service Unavailable", b"flaky")
                             if _flaky % 2 else _reply("200 OK", b"ok"))
            elif target == "/count":
                writer.write(_reply("200 OK", str(_flaky).encode()))
            else:
                writer.write(_reply("200 OK", b"ok"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", int(os.environ.get("PORT", "8080")))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
