"""filter / transformer: the functions of Knative's Parallel sample, with Python expressions.

Images `labkit/filter` and `labkit/transformer`. Knative's sample
(https://github.com/knative/docs/tree/main/code-samples/eventing/parallel) uses
`villardl/filter-nodejs` and `villardl/transformer-nodejs`, which evaluate a JavaScript
expression from the environment; these evaluate a Python expression the same way:

    FILTER       a boolean over `event` (the attributes, plus `data` parsed as JSON when it is
                 JSON). True: reply with the event unchanged (the Parallel branch goes on);
                 False: 202 with no event (the branch ends here).
    TRANSFORMER  a value over `event`; reply with the event whose data is that value as JSON.

Names available besides `event`: `parse_time(text)` (an RFC 3339 time in epoch seconds, like
JavaScript's Date.parse in seconds) and the builtins round, int, float, str, len, abs, min,
max. The docs' even filter `Math.round(Date.parse(event.time) / 60000) % 2 === 0` reads here
`round(parse_time(event['time']) / 60) % 2 == 0`. An expression that fails answers 500 with
the error, so a broken function shows up as failed deliveries.
Run it: PORT=8080 FILTER="event['type'] == 'x'" python -m labkit.apps.expressions
"""

from __future__ import annotations

import builtins
import json
import os
import sys
from datetime import datetime
from typing import Any

from labkit.apps.event_function import FunctionError, run_function
from labkit.eventing.events import Event

__all__ = ["ExpressionFunction", "main", "parse_time"]

_BUILTINS = {name: getattr(builtins, name)
             for name in ("round", "int", "float", "str", "len", "abs", "min", "max", "bool")}


def parse_time(text: str) -> float:
    """RFC 3339 -> epoch seconds (Python 3.10's fromisoformat needs the Z spelled out)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ExpressionFunction:
    """One compiled FILTER or TRANSFORMER expression and the reply it gives an event."""

    def __init__(self, role: str, expression: str) -> None:
        if role not in ("filter", "transformer"):
            raise ValueError(f"role must be filter or transformer, got {role!r}")
        self.role = role
        self.code = compile(expression.strip(), f"<{role.upper()}>", "eval")

    def evaluate(self, event: Event) -> Any:
        view: dict[str, Any] = dict(event.attributes)
        try:
            view["data"] = json.loads(event.data) if event.data else None
        except ValueError:
            view["data"] = event.data.decode("utf-8", "replace") if event.data else None
        names = {"__builtins__": _BUILTINS, "event": view, "parse_time": parse_time}
        return eval(self.code, names)  # noqa: S307 (the pod's own configured expression)

    def reply(self, event: Event) -> Event | None:
        try:
            result = self.evaluate(event)
        except Exception as err:  # noqa: BLE001 (any failure of the user's expression)
            raise FunctionError(500, f"{self.role.upper()} failed: {type(err).__name__}: {err}") from None
        if self.role == "filter":
            return event if result else None
        return Event(event.with_attributes(datacontenttype="application/json").attributes,
                     json.dumps(result).encode())


def main() -> None:
    roles = [(role, os.environ[role.upper()]) for role in ("filter", "transformer")
             if os.environ.get(role.upper())]
    if len(roles) != 1:
        sys.exit("expressions: set exactly one of FILTER or TRANSFORMER")
    try:
        function = ExpressionFunction(*roles[0])
    except (SyntaxError, ValueError) as err:
        sys.exit(f"expressions: {roles[0][0].upper()} is not a Python expression: {err}")
    run_function("expressions", function.reply)


if __name__ == "__main__":
    main()
