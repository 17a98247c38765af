"""Reading the per-hop timing the model server, transformer and Knative's hops report.

The model server and transformer answer with a standard `Server-Timing` header
(`decode;dur=0.12, predict;dur=3.1, ...`, milliseconds); on the way back the queue-proxy and the
activator each append a line of their own (`queue-proxy`, `activator-wait`, `activator`). HTTP
lets a list-valued header repeat, and clients join the lines with ", " (httpx does), so one
string holds them all; a notebook turns it into numbers to chart where a request's time went.
"""

from __future__ import annotations

__all__ = ["parse_server_timing"]


def parse_server_timing(header: str | list[str] | None) -> dict[str, float]:
    """{"decode": 0.12, "predict": 3.1, "queue-proxy": 0.05, ...} in milliseconds, in header
    order; `header` is the joined value or the list of its lines (`headers.get_list(...)`).
    A name that appears twice (two outputs predicted) adds up; entries without `dur` count as 0."""
    if isinstance(header, list):
        header = ", ".join(header)
    found: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = [part.strip() for part in entry.split(";")]
        if not name:
            continue
        duration = 0.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                try:
                    duration = float(value.strip().strip('"'))
                except ValueError:
                    raise ValueError(f"Server-Timing entry {entry.strip()!r}: dur is not a "
                                     "number") from None
        found[name] = found.get(name, 0.0) + duration
    return found
