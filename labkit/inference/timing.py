"""Writing and reading the per-hop timing the model server, transformer and Knative's hops report.

The model server answers with a standard `Server-Timing` header (`decode;dur=0.12,
predict;dur=3.1, encode;dur=0.05`, milliseconds). A transformer (the built-in one and a
kserve.Model served by labkit.inference.custom) reports the stages KServe times for every
model (kserve model.py ``Model.__call__``: ``preprocess_ms``, ``predict_ms``,
``postprocess_ms``, and the ``request_preprocess_seconds`` / ``request_predict_seconds`` /
``request_postprocess_seconds`` histograms): `preprocess`, `predict` (for a transformer, the
round trip to the predictor) and `postprocess`, followed by the predictor's own entries
prefixed `predictor.` (`predictor.decode`, `predictor.predict`, ...). On the way back the
queue-proxy and the activator each append a line of their own (`queue-proxy`,
`activator-wait`, `activator`). HTTP lets a list-valued header repeat, and clients join the
lines with ", " (httpx does), so one string holds them all; a notebook turns it into numbers
to chart where a request's time went. KServe itself sends no Server-Timing: it is labkit's
way to show those same stage times to a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["StageTimes", "parse_server_timing", "server_timing", "stage_times"]


def server_timing(parts: Sequence[tuple[str, float]], predictor: str | None = None) -> str:
    """The header value for `parts` ((name, seconds), in order), then the `predictor`'s own
    Server-Timing entries, if any, each prefixed `predictor.`."""
    entries = [f"{name};dur={seconds * 1000:.3f}" for name, seconds in parts]
    entries += [f"predictor.{entry.strip()}" for entry in (predictor or "").split(",") if entry.strip()]
    return ", ".join(entries)


@dataclass
class StageTimes:
    """One request's stage times, and the Server-Timing its predictor answered with."""

    stages: list[tuple[str, float]] = field(default_factory=list)
    predictor: str | None = None

    def header(self) -> str:
        return server_timing(self.stages, self.predictor)


stage_times: ContextVar[StageTimes | None] = ContextVar("labkit_stage_times", default=None)
"""The request being served (set by the server around a model's call): kserve.Model's
``__call__`` adds its stages and the predictor client the predictor's header, without
changing the SDK's signatures."""


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
