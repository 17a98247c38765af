"""A Flagger `rollout` webhook that judges a canary by its accuracy on labelled feedback (policy).

Flagger POSTs `{"name", "namespace", "phase", "checksum", "metadata": {string: string}}` to
each webhook and counts an answer outside 200-202 (or a timeout) as a failed check, logging
the body (fluxcd/flagger docs/gitbook/usage/webhooks.md, pkg/controller/webhook.go). A
`rollout` hook runs on every analysis iteration before the metric checks, so this gate halts
the advancement whenever the canary's accuracy is not good enough, and `threshold` failed
checks roll it back. Metadata (all strings, as in Flagger's CRD):

    canary       the canary's version label in the monitor (required)
    primary      the primary's version label (required with maxDrop)
    model        the InferenceService / model name (default: the Canary's name)
    minAccuracy  lowest acceptable canary accuracy, in percent (like request-success-rate)
    maxDrop      largest acceptable drop below the primary, in percentage points
    minSamples   labelled predictions each judged version needs (default 50)
    window       judge only the most recent N labelled predictions per version (default: all)

At least one of minAccuracy and maxDrop is required. The answers: 200 the canary passes;
403 its accuracy fails a bound; 412 too few labelled samples to judge. Too few samples is a
failed check on purpose: Flagger's own metric checks fail when a query has no values, and a
canary must not advance on no evidence (send load and feedback within the interval, or raise
`threshold`). A payload that is not a valid Flagger webhook call is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.quality.ledger import Accuracy

__all__ = ["GateConfig", "GateError", "Verdict", "judge", "parse_webhook"]

DEFAULT_MIN_SAMPLES = 50
METADATA_KEYS = ("canary", "primary", "model", "minAccuracy", "maxDrop", "minSamples", "window")


class GateError(ValueError):
    """A webhook payload the gate cannot use (HTTP 400); the message names the field."""


@dataclass(frozen=True)
class GateConfig:
    namespace: str
    model: str
    canary: str
    primary: str | None = None
    min_accuracy: float | None = None
    """Percent."""
    max_drop: float | None = None
    """Percentage points."""
    min_samples: int = DEFAULT_MIN_SAMPLES
    window: int = 0
    """0: every labelled prediction so far."""
    phase: str = ""


@dataclass(frozen=True)
class Verdict:
    status: int
    result: str
    """"pass", "fail" or "insufficient"."""
    reason: str
    canary: Accuracy
    primary: Accuracy | None


def parse_webhook(doc: Any) -> GateConfig:
    """Flagger's webhook payload -> the gate's configuration, or GateError naming the field."""
    if not isinstance(doc, dict):
        raise GateError("body: expected Flagger's webhook payload, a JSON object")
    for field in ("name", "namespace"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise GateError(f"{field}: missing or not a non-empty string")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise GateError("metadata: expected an object of strings")
    for key, value in metadata.items():
        if key not in METADATA_KEYS:
            raise GateError(f"metadata.{key}: unknown key; the gate reads "
                            f"{', '.join(METADATA_KEYS)}")
        if not isinstance(value, str):
            raise GateError(f"metadata.{key}: Flagger metadata values are strings, write "
                            f"\"{value}\" in quotes")
    if not metadata.get("canary"):
        raise GateError("metadata.canary: required, the canary's version label in the monitor")
    config = GateConfig(
        namespace=doc["namespace"], model=metadata.get("model") or doc["name"],
        canary=metadata["canary"], primary=metadata.get("primary") or None,
        min_accuracy=_percent(metadata, "minAccuracy"), max_drop=_percent(metadata, "maxDrop"),
        min_samples=_count(metadata, "minSamples", DEFAULT_MIN_SAMPLES, 1),
        window=_count(metadata, "window", 0, 0), phase=str(doc.get("phase") or ""),
    )
    if config.min_accuracy is None and config.max_drop is None:
        raise GateError("metadata: set minAccuracy and/or maxDrop, or the gate judges nothing")
    if config.max_drop is not None and config.primary is None:
        raise GateError("metadata.primary: required with maxDrop (the version to compare with)")
    if config.window and config.window < config.min_samples:
        raise GateError(f"metadata.window: {config.window} is smaller than minSamples "
                        f"{config.min_samples}, so the gate could never pass")
    return config


def judge(config: GateConfig, canary: Accuracy, primary: Accuracy | None) -> Verdict:
    """The verdict on the canary's (windowed) accuracy, and the primary's for maxDrop."""
    def verdict(status: int, result: str, reason: str) -> Verdict:
        return Verdict(status, result, reason, canary, primary)

    judged = [(config.canary, canary)]
    if config.max_drop is not None:
        assert primary is not None, "maxDrop needs the primary's accuracy"
        judged.append((config.primary or "", primary))
    for version, reading in judged:
        if reading.labelled < config.min_samples:
            return verdict(412, "insufficient",
                           f"version {version} has {reading.labelled} labelled predictions"
                           f"{_scope(config)}; the gate needs minSamples={config.min_samples}")
    score = 100 * (canary.accuracy or 0.0)
    measured = f"canary {config.canary} accuracy {score:.2f}% (n={canary.labelled})"
    passed = []
    if config.min_accuracy is not None:
        if score < config.min_accuracy:
            return verdict(403, "fail", f"{measured} is below minAccuracy {config.min_accuracy:g}%")
        passed.append(f">= minAccuracy {config.min_accuracy:g}%")
    if config.max_drop is not None and primary is not None:
        base = 100 * (primary.accuracy or 0.0)
        compared = (f"primary {config.primary} {base:.2f}% (n={primary.labelled}), "
                    f"drop {base - score:.2f} points")
        if base - score > config.max_drop:
            return verdict(403, "fail", f"{measured}, {compared} > maxDrop {config.max_drop:g}")
        passed.append(f"{compared} <= maxDrop {config.max_drop:g}")
    return verdict(200, "pass", f"{measured}: " + "; ".join(passed))


def _scope(config: GateConfig) -> str:
    return f" in the last-{config.window} window" if config.window else ""


def _percent(metadata: Mapping[str, str], key: str) -> float | None:
    text = metadata.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise GateError(f"metadata.{key}: {text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise GateError(f"metadata.{key}: {value:g} is outside 0-100 (percent)")
    if key == "minAccuracy" and 0 < value <= 1:
        # 0.9 as a fraction would mean "0.9 %", a gate that passes anything.
        raise GateError(f"metadata.minAccuracy: {value:g} is a percentage (0-100): "
                        f"did you mean {value * 100:g}?")
    return value


def _count(metadata: Mapping[str, str], key: str, default: int, smallest: int) -> int:
    text = metadata.get(key)
    if not text:
        return default
    if not text.strip().isdigit() or int(text) < smallest:
        raise GateError(f"metadata.{key}: {text!r} is not a whole number >= {smallest}")
    return int(text)
