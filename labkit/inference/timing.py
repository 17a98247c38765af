"""Reading the per-hop timing the model server and transformer report.

Both answer with a standard `Server-Timing` header (`decode;dur=0.12, predict;dur=3.1, ...`,
milliseconds); a notebook turns it into numbers to chart where a request's time went.
"""

from __future__ import annotations

__all__ = ["parse_server_timing"]


def parse_server_timing(header: str | None) -> dict[str, float]:
    """{"decode": 0.12, "predict": 3.1, ...} in milliseconds, in header order; a name that
    appears twice (two outputs predicted) adds up; entries without `dur` count as 0."""
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
