"""What Knative's sample event functions share: POST a CloudEvent, get the reply event (200)
or none (202, the event ends here), and the process around it (port from $PORT, stop on a signal).

A function is `reply(event) -> Event | None`; it raises `FunctionError(status, message)` for an
event it cannot handle, answered as that status with a JSON error body.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from labkit.eventing.events import Event, EventError, decode_request, encode_binary
from labkit.eventing.wire import Request, Response, json_error, serve

__all__ = ["FunctionError", "event_handler", "run_function"]

Reply = Callable[[Event], "Event | None"]


class FunctionError(Exception):
    """The function could not handle the event: answered with `status` and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def event_handler(reply: Reply) -> Callable[[Request], Awaitable[Response]]:
    """The HTTP handler around `reply`."""

    async def handle(request: Request) -> Response:
        if request.method != "POST":
            return json_error(405, "send CloudEvents with POST")
        try:
            event = decode_request(request.headers, request.body)
        except EventError as err:
            return json_error(err.status, err.message)
        try:
            answer = reply(event)
        except FunctionError as err:
            return json_error(err.status, err.message)
        if answer is None:
            return Response(202)
        headers, body = encode_binary(answer)
        return Response(200, body, headers)

    return handle


def run_function(name: str, reply: Reply) -> None:
    """Serve `reply` on $PORT (default 8080) until SIGTERM/SIGINT."""
    from labkit.apps.serve import signalled

    raw_port = os.environ.get("PORT", "8080")
    if not raw_port.isdigit():
        sys.exit(f"{name}: PORT must be a port number, got {raw_port!r}")

    async def run() -> None:
        server = await serve(event_handler(reply), port=int(raw_port))
        await signalled().wait()
        server.close()

    asyncio.run(run())
