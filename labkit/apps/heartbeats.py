"""heartbeats: Knative's ContainerSource / SinkBinding sample (knative/eventing
`cmd/heartbeats/main.go`).

Image `labkit/heartbeats` (public: gcr.io/knative-releases/knative.dev/eventing/cmd/heartbeats).
Every `--period` (Go duration or seconds, default 5s) it POSTs to $K_SINK a CloudEvent of type
`dev.knative.eventing.samples.heartbeat` (`--eventType`), source
`https://knative.dev/eventing-contrib/cmd/heartbeats/#<POD_NAMESPACE>/<POD_NAME>`
(`--eventSource`), extensions the=42, heart=yes, beats=true plus K_CE_OVERRIDES' extensions,
and JSON data {"id": <sequence from 1>, "label": <--label>}. POD_NAME and POD_NAMESPACE are
required, as in the original. Unlike the original it also answers GET on $PORT with how many
beats it sent, because labkit's pods are ready when their port answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import uuid
from datetime import datetime, timezone

from labkit.eventing.dispatch import attempt
from labkit.eventing.events import AttributeValue, Event
from labkit.eventing.wire import Client, Request, Response, json_response, serve

__all__ = ["heartbeat", "main", "parse_period"]

_GO_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_period(text: str) -> float:
    """'5s', '500ms', '1m' or a bare number of seconds -> seconds (ValueError otherwise)."""
    if text.isdigit():
        return float(text)
    match = _GO_DURATION.match(text)
    if match is None:
        raise ValueError(f"Invalid period interval provided: {text!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


def heartbeat(sequence: int, *, source: str, event_type: str, label: str,
              overrides: dict[str, str]) -> Event:
    attributes: dict[str, AttributeValue] = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source,
                                             "type": event_type, "datacontenttype": "application/json",
                                             "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                                             "the": 42, "heart": "yes", "beats": True, **overrides}
    data = json.dumps({"id": sequence, "label": label}, separators=(",", ":")).encode()
    return Event(attributes, data)


def main(argv: list[str] | None = None) -> None:
    from labkit.apps.serve import signalled

    parser = argparse.ArgumentParser(prog="heartbeats")
    for flag, default in (("--eventSource", ""), ("--eventType",
                          "dev.knative.eventing.samples.heartbeat"), ("--sink", ""),
                          ("--label", ""), ("--period", "5s")):
        parser.add_argument(flag, default=default)
    args = parser.parse_args(argv)
    sink = os.environ.get("K_SINK") or args.sink
    name, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not name or not namespace:
        sys.exit("heartbeats: required key POD_NAME / POD_NAMESPACE missing value")
    try:
        period = parse_period(args.period)
        raw = os.environ.get("K_CE_OVERRIDES") or "{}"
        overrides = {k: str(v) for k, v in json.loads(raw).get("extensions", {}).items()}
    except ValueError as err:
        sys.exit(f"heartbeats: {err}")
    source = args.eventSource or (
        f"https://knative.dev/eventing-contrib/cmd/heartbeats/#{namespace}/{name}")
    label = json.loads(args.label) if args.label.startswith('"') else args.label
    sent = {"beats": 0, "failed": 0}

    async def report(request: Request) -> Response:
        return json_response(200, {"sink": sink, **sent})

    async def beat(client: Client) -> None:
        sequence = 0
        while True:
            sequence += 1
            event = heartbeat(sequence, source=source, event_type=args.eventType, label=label,
                              overrides=overrides)
            if sink:
                result = await attempt(client, sink, event, timeout=10.0)
                status, error = result.outcome.status, result.outcome.error
            else:  # as the original: every send fails until a binding sets K_SINK
                status, error = None, "no sink: K_SINK is not set"
            ok = status is not None and 200 <= status < 300
            sent["beats" if ok else "failed"] += 1
            print(json.dumps({"sent": sequence, "status": status, "error": error}), flush=True)
            await asyncio.sleep(period)  # the ticker of the original

    async def run() -> None:
        server = await serve(report, port=int(os.environ.get("PORT", "8080")))
        client = Client()
        task = asyncio.create_task(beat(client))
        await signalled().wait()
        task.cancel()
        server.close()
        client.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
