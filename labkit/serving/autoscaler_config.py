"""Knative's autoscaling configuration: cluster defaults, revision annotations, their checks.

Knative reads its defaults from the ``config-autoscaler`` ConfigMap and lets each revision
override some of them with ``autoscaling.knative.dev/*`` annotations on
``spec.template.metadata``. This module holds:

- `AutoscalerConfig`: the ConfigMap keys with Knative's defaults (target 100 concurrent
  requests at 70 % utilisation, burst capacity 211, panic at 200 % over 10 % of a 60 s window,
  scale up x1000 / down /2 per tick, 30 s scale-to-zero grace) and their validation.
- `annotation_errors` / `validate_annotations`: Knative's checks of the annotations, with its
  messages, each naming the annotation key (``expected 6s <= 1s <= 1h0m0s:
  autoscaling.knative.dev/window``).
- `resolve_metric_target`, `panic_window_seconds` and `RevisionAutoscaling.resolve`: what a
  revision ends up with once annotations, ``containerConcurrency`` and defaults are combined,
  and the `DeciderSpec` the KPA scales it with.

Followed: knative/serving ``pkg/apis/autoscaling/{register.go,annotation_validation.go}`` and
``annotation_validation_test.go``, ``pkg/autoscaler/config/config.go``,
``config/core/configmaps/autoscaler.yaml``, ``pkg/reconciler/autoscaling/resources/target.go``,
``pkg/reconciler/autoscaling/kpa/resources/decider.go``, per the reference note
/work/shared/reference/knative-kpa.md (commit 98e5ef90aa7033797aa0a61ef97f3ff7e49a3944).
Own code, no Knative text copied. Numbers that Go would accept as ``Inf``/``NaN`` are
rejected here: they pass Knative's range checks only because NaN compares false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from fractions import Fraction

from labkit.serving.kpa import DeciderSpec
from labkit.serving.metrics_window import BUCKET_SECONDS

__all__ = [
    "ACTIVATION_SCALE",
    "CLASS",
    "GROUP",
    "HPA_CLASS",
    "INITIAL_SCALE",
    "KPA_CLASS",
    "MAX_SCALE",
    "METRIC",
    "METRIC_AGGREGATION_ALGORITHM",
    "MIN_SCALE",
    "PANIC_THRESHOLD_PERCENTAGE",
    "PANIC_WINDOW_PERCENTAGE",
    "SCALE_DOWN_DELAY",
    "SCALE_TO_ZERO_POD_RETENTION_PERIOD",
    "TARGET",
    "TARGET_BURST_CAPACITY",
    "TARGET_UTILIZATION_PERCENTAGE",
    "WINDOW",
    "AnnotationError",
    "AutoscalerConfig",
    "RevisionAutoscaling",
    "annotation_errors",
    "format_go_duration",
    "panic_window_seconds",
    "parse_go_duration",
    "resolve_metric_target",
    "validate_annotations",
]

GROUP = "autoscaling.knative.dev"
KPA_CLASS = "kpa.autoscaling.knative.dev"
HPA_CLASS = "hpa.autoscaling.knative.dev"

CLASS = f"{GROUP}/class"
METRIC = f"{GROUP}/metric"
TARGET = f"{GROUP}/target"
MIN_SCALE = f"{GROUP}/min-scale"
MAX_SCALE = f"{GROUP}/max-scale"
INITIAL_SCALE = f"{GROUP}/initial-scale"
ACTIVATION_SCALE = f"{GROUP}/activation-scale"
WINDOW = f"{GROUP}/window"
PANIC_WINDOW_PERCENTAGE = f"{GROUP}/panic-window-percentage"
PANIC_THRESHOLD_PERCENTAGE = f"{GROUP}/panic-threshold-percentage"
TARGET_UTILIZATION_PERCENTAGE = f"{GROUP}/target-utilization-percentage"
TARGET_BURST_CAPACITY = f"{GROUP}/target-burst-capacity"
SCALE_DOWN_DELAY = f"{GROUP}/scale-down-delay"
SCALE_TO_ZERO_POD_RETENTION_PERIOD = f"{GROUP}/scale-to-zero-pod-retention-period"
METRIC_AGGREGATION_ALGORITHM = f"{GROUP}/metric-aggregation-algorithm"

# The older camelCase spellings Knative still accepts; the kebab-case key wins if both are set.
_LEGACY = {
    MIN_SCALE: f"{GROUP}/minScale",
    MAX_SCALE: f"{GROUP}/maxScale",
    INITIAL_SCALE: f"{GROUP}/initialScale",
    PANIC_WINDOW_PERCENTAGE: f"{GROUP}/panicWindowPercentage",
    PANIC_THRESHOLD_PERCENTAGE: f"{GROUP}/panicThresholdPercentage",
    TARGET_UTILIZATION_PERCENTAGE: f"{GROUP}/targetUtilizationPercentage",
    TARGET_BURST_CAPACITY: f"{GROUP}/targetBurstCapacity",
    SCALE_DOWN_DELAY: f"{GROUP}/scaleDownDelay",
    SCALE_TO_ZERO_POD_RETENTION_PERIOD: f"{GROUP}/scaleToZeroPodRetentionPeriod",
    METRIC_AGGREGATION_ALGORITHM: f"{GROUP}/metricAggregationAlgorithm",
}

TARGET_MIN = 0.01
WINDOW_MIN = 6.0
WINDOW_MAX = 3600.0
PANIC_WINDOW_PERCENTAGE_RANGE = (1.0, 100.0)
PANIC_THRESHOLD_PERCENTAGE_RANGE = (110.0, 1000.0)
MAX_INT32 = 2**31 - 1
RPS_TARGET_UTILIZATION = 0.7
"""Utilisation for the rps metric: fixed in Knative, not read from the ConfigMap."""
HPA_DEFAULT_TARGET_PERCENTAGE = 80.0
"""Without a ``target`` annotation Knative gives the HPA no metric, and Kubernetes then
targets 80 % CPU utilisation."""
ACTIVATION_TIMEOUT_BUFFER = 30.0
"""Knative gives up activating a revision after its progress deadline plus this."""

_ALGORITHMS = ("linear", "weighted-exponential", "weightedExponential")


def _get(annotations: Mapping[str, str], key: str) -> tuple[str, str] | None:
    """(key actually used, value) for `key` or its legacy spelling, like Knative's KeyPriority."""
    for candidate in (key, _LEGACY.get(key)):
        if candidate is not None and candidate in annotations:
            return candidate, annotations[candidate]
    return None


# --- Go value syntax -----------------------------------------------------------------------

_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
            "m": 60 * 10**9, "h": 3600 * 10**9}


def _parse_float(text: str) -> float | None:
    """A finite float in Go's decimal syntax, or None."""
    return float(text) if _FLOAT.fullmatch(text) else None


def _parse_int(text: str) -> int | None:
    """An integer in Go's base-10 syntax (no spaces, no underscores), or None."""
    return int(text) if _INT.fullmatch(text) else None


def _duration_ns(text: str) -> int | None:
    """Go's ``time.ParseDuration`` in whole nanoseconds, or None when it is not a duration."""
    sign = 1
    body = text
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    total = Fraction(0)
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            return None
        total += Fraction(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if pos == 0:
        return None
    return sign * math.floor(total)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``"60s"``, ``"1m30s"``, ``"1h"``, ``"0"``).

    Raises ValueError naming the text when it is not one: Knative's annotations and
    ConfigMap use Go's syntax, so a bare ``"60"`` is not a duration.
    """
    ns = _duration_ns(text)
    if ns is None:
        raise ValueError(f"{text!r} is not a duration (use Go syntax such as 60s, 1m30s, 1h)")
    return ns / 10**9


def format_go_duration(seconds: float) -> str:
    """Whole seconds the way Go prints a ``time.Duration``: 6 -> ``6s``, 3600 -> ``1h0m0s``."""
    whole = int(seconds)
    if whole != seconds:
        raise ValueError(f"only whole seconds are formatted, got {seconds!r}")
    sign = "-" if whole < 0 else ""
    whole = abs(whole)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _go_number(value: float) -> str:
    """A bound printed as Go's %v prints a float64 (110.0 -> 110)."""
    return f"{value:g}" if value != int(value) else str(int(value))


# --- the ConfigMap --------------------------------------------------------------------------

@dataclass(frozen=True)
class AutoscalerConfig:
    """``config-autoscaler`` with Knative's defaults; times in seconds, fractions as ratios.

    ``container_concurrency_target_percentage`` is a fraction (0.7): like Knative, a
    ConfigMap value above 1 (``"70"``) is read as a percentage by `from_configmap`.
    """

    container_concurrency_target_percentage: float = 0.7
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    activator_capacity: float = 100.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0
    pod_autoscaler_class: str = KPA_CLASS
    progress_deadline: float = 600.0
    """``config-deployment`` ``progress-deadline``: bounds how long activation may take."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"config-autoscaler: {problem}")

    def _problem(self) -> str | None:
        """The first invalid setting, described with its ConfigMap key, or None."""
        fraction = self.container_concurrency_target_percentage
        if not 0 < fraction <= 1:
            return (f"container-concurrency-target-percentage = {fraction * 100:g} is outside "
                    "of valid range of (0, 100]")
        target = fraction * self.container_concurrency_target_default
        if not target >= TARGET_MIN:
            return ("container-concurrency-target-percentage and "
                    f"container-concurrency-target-default yield target concurrency of "
                    f"{target:g}, can't be less than {TARGET_MIN:g}")
        if not self.requests_per_second_target_default >= TARGET_MIN:
            return (f"requests-per-second-target-default must be at least {TARGET_MIN:g}, was "
                    f"{self.requests_per_second_target_default:g}")
        if not (self.target_burst_capacity >= 0 or self.target_burst_capacity == -1):
            return ("target-burst-capacity must be either non-negative or -1 (for unlimited), "
                    f"was: {self.target_burst_capacity:g}")
        if not self.activator_capacity >= 1:
            return f"activator-capacity = {self.activator_capacity:g}, must be at least 1"
        if not self.max_scale_up_rate > 1:
            return f"max-scale-up-rate = {self.max_scale_up_rate:g}, must be greater than 1.0"
        if not self.max_scale_down_rate > 1:
            return f"max-scale-down-rate = {self.max_scale_down_rate:g}, must be greater than 1.0"
        if not WINDOW_MIN <= self.stable_window <= WINDOW_MAX:
            return (f"stable-window = {self.stable_window:g}s, must be in "
                    f"[{format_go_duration(WINDOW_MIN)}; {format_go_duration(WINDOW_MAX)}] range")
        if self.stable_window != int(self.stable_window):
            return f"stable-window = {self.stable_window:g}s, must be whole seconds"
        low, high = PANIC_WINDOW_PERCENTAGE_RANGE
        if not low <= self.panic_window_percentage <= high:
            return (f"panic-window-percentage = {self.panic_window_percentage:g}, must be in "
                    f"[{low:g}, {high:g}] interval")
        if not self.panic_threshold_percentage > 0:
            return f"panic-threshold-percentage = {self.panic_threshold_percentage:g}, must be > 0"
        if not self.scale_to_zero_grace_period > 0:
            return ("scale-to-zero-grace-period must be positive, was: "
                    f"{self.scale_to_zero_grace_period:g}s")
        if not self.scale_to_zero_pod_retention_period >= 0:
            return ("scale-to-zero-pod-retention-period cannot be negative, was: "
                    f"{self.scale_to_zero_pod_retention_period:g}s")
        if not self.scale_down_delay >= 0:
            return f"scale-down-delay cannot be negative, was: {self.scale_down_delay:g}s"
        if self.scale_down_delay != int(self.scale_down_delay):
            return (f"scale-down-delay = {self.scale_down_delay:g}s, must be specified with at "
                    "most second precision")
        zero_initial = self.initial_scale == 0 and not self.allow_zero_initial_scale
        if self.initial_scale < 0 or zero_initial:
            return (f"initial-scale = {self.initial_scale}, must be at least 0 (or at least 1 "
                    "when allow-zero-initial-scale is false)")
        if self.min_scale < 0:
            return f"min-scale = {self.min_scale}, must be at least 0"
        if self.max_scale_limit < 0:
            return f"max-scale-limit = {self.max_scale_limit}, must be at least 0"
        over_limit = self.max_scale_limit > 0 and self.max_scale > self.max_scale_limit
        if self.max_scale < 0 or over_limit:
            return f"max-scale = {self.max_scale}, must be in [0, max-scale-limit] range"
        if self.max_scale and self.min_scale > self.max_scale:
            return (f"min-scale (= {self.min_scale}) must be less than max-scale "
                    f"(= {self.max_scale})")
        if self.pod_autoscaler_class not in (KPA_CLASS, HPA_CLASS):
            return (f"pod-autoscaler-class = {self.pod_autoscaler_class!r}, labkit supports "
                    f"{KPA_CLASS} and {HPA_CLASS}")
        return None

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Read the ``data`` of a ``config-autoscaler`` ConfigMap (missing keys keep defaults).

        Raises ValueError naming the key whose value does not parse or is out of range.
        """
        values: dict[str, object] = {}
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        for key, text in data.items():
            if key.startswith("_"):  # Knative's _example block
                continue
            spec = known.get(key)
            if spec is None:
                continue  # Knative ignores keys it does not know (tick-interval, ...)
            kind = cls.__dataclass_fields__[spec.name].type
            if kind == "bool":
                if text.lower() not in ("true", "false"):
                    raise ValueError(f"config-autoscaler: {key}: {text!r} is not true or false")
                values[spec.name] = text.lower() == "true"
            elif kind == "int":
                number = _parse_int(text)
                if number is None:
                    raise ValueError(f"config-autoscaler: {key}: {text!r} is not an integer")
                values[spec.name] = number
            elif kind == "str":
                values[spec.name] = text
            elif key in _DURATION_KEYS:
                try:
                    values[spec.name] = parse_go_duration(text)
                except ValueError as exc:
                    raise ValueError(f"config-autoscaler: {key}: {exc}") from None
            else:
                real = _parse_float(text)
                if real is None:
                    raise ValueError(f"config-autoscaler: {key}: {text!r} is not a number")
                values[spec.name] = real
        fraction = values.get("container_concurrency_target_percentage")
        if isinstance(fraction, float) and fraction > 1:
            values["container_concurrency_target_percentage"] = fraction / 100
        return cls(**values)  # type: ignore[arg-type]


_DURATION_KEYS = frozenset({
    "stable-window", "scale-to-zero-grace-period", "scale-to-zero-pod-retention-period",
    "scale-down-delay", "progress-deadline",
})


# --- annotation validation ----------------------------------------------------------------

class AnnotationError(ValueError):
    """Invalid autoscaling annotations. `lines` are Knative's messages, each ending in the key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _out_of_bounds(value: str, low: str, high: str, key: str) -> tuple[str, str]:
    return f"expected {low} <= {value} <= {high}", key


def _invalid(value: str, key: str) -> tuple[str, str]:
    return f"invalid value: {value}", key


def _check_class(anns: Mapping[str, str]) -> list[tuple[str, str]]:
    value = anns.get(CLASS)
    if value is not None and value.endswith(".knative.dev") and value not in (KPA_CLASS, HPA_CLASS):
        return [_invalid(value, CLASS)]
    return []


def _int_ge0(anns: Mapping[str, str], key: str) -> tuple[int, list[tuple[str, str]]]:
    found = _get(anns, key)
    if found is None:
        return 0, []
    used, text = found
    number = _parse_int(text)
    if number is None:
        return 0, [_invalid(text, used)]
    if number < 0 or number > MAX_INT32:
        return 0, [_out_of_bounds(text, "0", str(MAX_INT32), used)]
    return number, []


def _check_scales(anns: Mapping[str, str], config: AutoscalerConfig) -> list[tuple[str, str]]:
    low, errors = _int_ge0(anns, MIN_SCALE)
    high, more = _int_ge0(anns, MAX_SCALE)
    errors += more
    if high != 0 and high < low:
        message = f"max-scale={high} is less than min-scale={low}"
        errors += [(message, MAX_SCALE), (message, MIN_SCALE)]
    found = _get(anns, MAX_SCALE)
    if found is not None and config.max_scale_limit:
        if high > config.max_scale_limit:
            errors.append(_out_of_bounds(str(high), "1", str(config.max_scale_limit), found[0]))
        if high == 0:
            errors.append((f"max-scale=0 (unlimited), must be less than {config.max_scale_limit}",
                           found[0]))
    # activation-scale: at least 2 (1 is the default behaviour), and within min/max-scale.
    # Knative's wording for the cross checks is not in our reference; these messages are ours.
    if ACTIVATION_SCALE in anns:
        text = anns[ACTIVATION_SCALE]
        number = _parse_int(text)
        if number is None or not 2 <= number <= MAX_INT32:
            errors.append(_out_of_bounds(text, "2", str(MAX_INT32), ACTIVATION_SCALE))
        elif high and number > high:
            errors.append((f"activation-scale={number} is greater than max-scale={high}",
                           ACTIVATION_SCALE))
        elif number < low:
            errors.append((f"activation-scale={number} is less than min-scale={low}",
                           ACTIVATION_SCALE))
    return errors


def _check_percentage(anns: Mapping[str, str], key: str, low: float, high: float
                      ) -> list[tuple[str, str]]:
    found = _get(anns, key)
    if found is None:
        return []
    used, text = found
    number = _parse_float(text)
    if number is None:
        return [_invalid(text, used)]
    if not low <= number <= high:
        return [_out_of_bounds(text, _go_number(low), _go_number(high), used)]
    return []


def _check_floats(anns: Mapping[str, str]) -> list[tuple[str, str]]:
    errors = _check_percentage(anns, PANIC_WINDOW_PERCENTAGE, *PANIC_WINDOW_PERCENTAGE_RANGE)
    errors += _check_percentage(anns, PANIC_THRESHOLD_PERCENTAGE,
                                *PANIC_THRESHOLD_PERCENTAGE_RANGE)
    if TARGET in anns:
        text = anns[TARGET]
        number = _parse_float(text)
        if number is None or number < TARGET_MIN:
            errors.append((f"target {text} should be at least {TARGET_MIN:g}", TARGET))
    errors += _check_percentage(anns, TARGET_UTILIZATION_PERCENTAGE, 1, 100)
    found = _get(anns, TARGET_BURST_CAPACITY)
    if found is not None:
        used, text = found
        number = _parse_float(text)
        if number is None or (number < 0 and number != -1):
            errors.append(_invalid(text, used))
    return errors


def _check_duration(anns: Mapping[str, str], key: str, low: float, whole_seconds: bool,
                    report_key: str | None = None) -> list[tuple[str, str]]:
    found = _get(anns, key)
    if found is None:
        return []
    used, text = found
    used = report_key or used
    ns = _duration_ns(text)
    if ns is None:
        return [_invalid(text, used)]
    if not low * 10**9 <= ns <= WINDOW_MAX * 10**9:
        return [_out_of_bounds(text, format_go_duration(low), format_go_duration(WINDOW_MAX), used)]
    if whole_seconds and ns % 10**9:
        return [("must be specified with at most second precision", used)]
    return []


def _check_metric(anns: Mapping[str, str]) -> list[tuple[str, str]]:
    if METRIC not in anns:
        return []
    metric = anns[METRIC]
    klass = anns.get(CLASS, KPA_CLASS)
    if klass == KPA_CLASS and metric not in ("concurrency", "rps"):
        return [_invalid(metric, METRIC)]
    if klass == HPA_CLASS and metric == "":
        return [_invalid(metric, METRIC)]
    return []


def _check_algorithm(anns: Mapping[str, str]) -> list[tuple[str, str]]:
    if anns.get(CLASS) != KPA_CLASS:
        return []  # other autoscalers may define their own values
    found = _get(anns, METRIC_AGGREGATION_ALGORITHM)
    if found and found[1] and found[1] not in _ALGORITHMS:
        return [_invalid(found[1], found[0])]
    return []


def _check_initial_scale(anns: Mapping[str, str], config: AutoscalerConfig
                         ) -> list[tuple[str, str]]:
    found = _get(anns, INITIAL_SCALE)
    if found is None:
        return []
    used, text = found
    number = _parse_int(text)
    if number is None or number < 0 or (number == 0 and not config.allow_zero_initial_scale):
        return [_invalid(text, used)]
    return []


def annotation_errors(annotations: Mapping[str, str] | None,
                      config: AutoscalerConfig | None = None) -> list[str]:
    """Knative's complaints about a revision's autoscaling annotations, as message lines.

    Each line is ``<why>: <annotation key>[, <key>]``; identical complaints about several keys
    are merged and the lines are sorted, as Knative prints a ``FieldError``. Empty when valid.
    """
    anns = annotations or {}
    config = config or AutoscalerConfig()
    found = (
        _check_class(anns)
        + _check_scales(anns, config)
        + _check_floats(anns)
        + _check_duration(anns, WINDOW, WINDOW_MIN, True, report_key=WINDOW)
        + _check_duration(anns, SCALE_TO_ZERO_POD_RETENTION_PERIOD, 0.0, False)
        + _check_duration(anns, SCALE_DOWN_DELAY, 0.0, True)
        + _check_metric(anns)
        + _check_algorithm(anns)
        + _check_initial_scale(anns, config)
    )
    merged: dict[str, set[str]] = {}
    for message, key in found:
        merged.setdefault(message, set()).add(key)
    return [f"{message}: {', '.join(sorted(keys))}" for message, keys in sorted(merged.items())]


def validate_annotations(annotations: Mapping[str, str] | None,
                         config: AutoscalerConfig | None = None) -> None:
    """Raise `AnnotationError` (all problems at once) if the annotations are invalid."""
    lines = annotation_errors(annotations, config)
    if lines:
        raise AnnotationError(lines)


# --- resolution -----------------------------------------------------------------------------

def resolve_metric_target(
    metric: str,
    container_concurrency: int,
    config: AutoscalerConfig,
    target_annotation: float | None = None,
    utilization_annotation: float | None = None,
) -> tuple[float, float]:
    """(target, total) per pod: what the KPA aims at, and what a pod is taken to hold.

    Concurrency: the total is ``containerConcurrency`` when set, else the ConfigMap default;
    a ``target`` annotation replaces it but cannot exceed ``containerConcurrency``. RPS: the
    default 200 or the annotation. The target is the total times the utilisation (annotation
    as a fraction, else 70 %), at least 0.01. Defaults give target 70, total 100.
    """
    if metric == "rps":
        total = config.requests_per_second_target_default
        utilization = RPS_TARGET_UTILIZATION
    elif metric == "concurrency":
        total = float(container_concurrency or config.container_concurrency_target_default)
        utilization = config.container_concurrency_target_percentage
    else:
        raise ValueError(f"metric must be 'concurrency' or 'rps', got {metric!r}")
    if target_annotation is not None:
        total = target_annotation
        if metric == "concurrency" and container_concurrency:
            total = min(target_annotation, float(container_concurrency))
    if utilization_annotation is not None:
        utilization = utilization_annotation
    return max(TARGET_MIN, total * utilization), total


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


def panic_window_seconds(stable_window: float, percentage: float) -> float:
    """The panic window: `percentage` of the stable window, in whole seconds, at least 1 s.

    60 s at 10 % -> 6 s; 10 s -> 1 s; 60 s at 51 % -> 31 s (halves round up, as Go's
    ``Duration.Round``).
    """
    seconds = math.floor(stable_window * percentage / 100 / BUCKET_SECONDS + 0.5) * BUCKET_SECONDS
    return max(BUCKET_SECONDS, seconds)


@dataclass(frozen=True)
class RevisionAutoscaling:
    """Everything the autoscaler uses for one revision, defaults and annotations combined."""

    autoscaler_class: str
    metric: str
    target: float
    total: float
    target_burst_capacity: float
    panic_threshold: float
    stable_window: float
    panic_window: float
    scale_down_delay: float
    min_scale: int
    max_scale: int
    initial_scale: int
    activation_scale: int
    scale_to_zero_pod_retention: float
    aggregation_algorithm: str
    reachable: bool
    config: AutoscalerConfig
    progress_deadline: float
    """Seconds the revision may take to reach its initial scale (the
    ``serving.knative.dev/progress-deadline`` annotation, else config-deployment's)."""

    @classmethod
    def resolve(
        cls,
        annotations: Mapping[str, str] | None,
        config: AutoscalerConfig | None = None,
        container_concurrency: int = 0,
        reachable: bool = True,
    ) -> RevisionAutoscaling:
        """Validate the annotations (raising `AnnotationError`) and combine them with `config`.

        `reachable` is False for a revision no route sends traffic to (routingState
        ``reserve``): min-scale and the pod retention period then no longer hold it up.
        """
        config = config or AutoscalerConfig()
        anns = dict(annotations or {})
        validate_annotations(anns, config)
        if container_concurrency < 0:
            raise ValueError(f"containerConcurrency must be >= 0, got {container_concurrency}")

        def number(key: str) -> float | None:
            found = _get(anns, key)
            return None if found is None else float(found[1])

        def duration(key: str, default: float) -> float:
            found = _get(anns, key)
            return default if found is None else parse_go_duration(found[1])

        klass = anns.get(CLASS, config.pod_autoscaler_class)
        metric = anns.get(METRIC) or ("cpu" if klass == HPA_CLASS else "concurrency")
        utilization = number(TARGET_UTILIZATION_PERCENTAGE)
        if metric in ("concurrency", "rps"):
            target, total = resolve_metric_target(
                metric, container_concurrency, config, number(TARGET),
                None if utilization is None else utilization / 100)
        else:  # HPA metrics (cpu, memory): the target is a utilisation percentage
            target = _default(number(TARGET), HPA_DEFAULT_TARGET_PERCENTAGE)
            total = 100.0
        threshold = _default(number(PANIC_THRESHOLD_PERCENTAGE), config.panic_threshold_percentage)
        stable = duration(WINDOW, config.stable_window)
        percentage = _default(number(PANIC_WINDOW_PERCENTAGE), config.panic_window_percentage)
        tbc = number(TARGET_BURST_CAPACITY)

        min_scale = int(_default(number(MIN_SCALE), config.min_scale))
        max_scale = int(_default(number(MAX_SCALE), config.max_scale))
        initial = _get(anns, INITIAL_SCALE)
        initial_scale = config.initial_scale
        if initial is not None and (int(initial[1]) > 0 or config.allow_zero_initial_scale):
            initial_scale = int(initial[1])
        algorithm = (_get(anns, METRIC_AGGREGATION_ALGORITHM) or ("", "linear"))[1] or "linear"
        # Deferred: progress_deadline parses its duration with this module's parse_go_duration.
        from labkit.serving.progress_deadline import revision_progress_deadline
        try:
            deadline = revision_progress_deadline(anns, config.progress_deadline)
        except ValueError as exc:
            raise AnnotationError([str(exc)]) from None
        return cls(
            autoscaler_class=klass,
            metric=metric,
            target=target,
            total=total,
            target_burst_capacity=config.target_burst_capacity if tbc is None else tbc,
            panic_threshold=threshold / 100,
            stable_window=stable,
            panic_window=panic_window_seconds(stable, percentage),
            scale_down_delay=duration(SCALE_DOWN_DELAY, config.scale_down_delay),
            min_scale=min_scale if reachable else 0,
            max_scale=max_scale,
            initial_scale=initial_scale,
            activation_scale=int(anns.get(ACTIVATION_SCALE, "1")),
            scale_to_zero_pod_retention=(
                duration(SCALE_TO_ZERO_POD_RETENTION_PERIOD,
                         config.scale_to_zero_pod_retention_period) if reachable else 0.0),
            aggregation_algorithm=(
                "weighted-exponential" if algorithm == "weightedExponential" else algorithm),
            reachable=reachable,
            config=config,
            progress_deadline=deadline,
        )

    def decider_spec(self) -> DeciderSpec:
        """The KPA decider spec for this revision (Knative's ``MakeDecider``)."""
        if self.metric not in ("concurrency", "rps"):
            raise ValueError(
                f"metric {self.metric!r} is scaled by the HPA class, not by the KPA decider")
        return DeciderSpec(
            scaling_metric=self.metric,
            target_value=self.target,
            total_value=self.total,
            target_burst_capacity=self.target_burst_capacity,
            panic_threshold=self.panic_threshold,
            max_scale_up_rate=self.config.max_scale_up_rate,
            max_scale_down_rate=self.config.max_scale_down_rate,
            activator_capacity=self.config.activator_capacity,
            stable_window=self.stable_window,
            scale_down_delay=self.scale_down_delay,
            reachable=self.reachable,
            activation_scale=self.activation_scale,
        )
