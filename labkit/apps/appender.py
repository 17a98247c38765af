"""appender: Knative's Sequence sample function (knative/eventing `cmd/appender/main.go`).

Image `labkit/appender` (public: gcr.io/knative-releases/knative.dev/eventing/cmd/appender).
It answers each CloudEvent with a reply: the same event with `MESSAGE` appended to the data's
`message` (data {"id": int, "message": str}) and, when `TYPE` is set, that type. Data that is
not such JSON is answered 400, as the original does. Used by
https://knative.dev/docs/eventing/flows/sequence/ (each step appends " - Handled by <i>").
Run it: PORT=8080 MESSAGE=" - Handled by 0" python -m labkit.apps.appender
"""

from __future__ import annotations

import json
import os

from labkit.apps.event_function import FunctionError, run_function
from labkit.eventing.events import Event

__all__ = ["Appender", "main"]

DEFAULT_MESSAGE = "boring default msg, change me with env[MESSAGE]"


class Appender:
    def __init__(self, message: str = DEFAULT_MESSAGE, event_type: str = "") -> None:
        self.message = message
        self.event_type = event_type

    def transform(self, event: Event) -> Event:
        """The reply: data.message + MESSAGE, type TYPE if set. ValueError for bad data."""
        try:
            data = json.loads(event.data or b"")
        except ValueError as err:
            raise ValueError(f"got error while unmarshalling data: {err}") from None
        if not isinstance(data, dict):
            raise ValueError("got error while unmarshalling data: not a JSON object")
        # Go's DataAs into struct {id int; message string}: other fields are dropped.
        payload = {"id": data.get("id", 0), "message": f"{data.get('message', '')}{self.message}"}
        changes: dict[str, str] = {"datacontenttype": "application/json"}
        if self.event_type:
            changes["type"] = self.event_type
        return Event(event.with_attributes(**changes).attributes,
                     json.dumps(payload, separators=(",", ":")).encode())

    def reply(self, event: Event) -> Event:
        try:
            return self.transform(event)
        except ValueError as err:
            raise FunctionError(400, str(err)) from None


def main() -> None:
    app = Appender(os.environ.get("MESSAGE", DEFAULT_MESSAGE), os.environ.get("TYPE", ""))
    run_function("appender", app.reply)


if __name__ == "__main__":
    main()
