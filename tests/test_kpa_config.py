"""Autoscaling configuration and annotations against the cases of Knative's own unit tests.

Ported (own code, same inputs and expected outputs) from knative/serving:
- ``pkg/apis/autoscaling/annotation_validation_test.go`` (``TestValidateAnnotations``), with
  the kebab-case keys of current Knative (the stored test version still spelled them
  camelCase; the messages are the same ``apis.FieldError`` texts);
- ``pkg/reconciler/autoscaling/resources/target_test.go`` (``TestResolveMetricTarget``), with
  current Knative's 0.01 target floor where the stored version still floored at 1;
plus the defaults and panic-window rule of /work/shared/reference/knative-kpa.md (commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from labkit.serving.autoscaler_config import (
    AnnotationError,
    AutoscalerConfig,
    RevisionAutoscaling,
    annotation_errors,
    format_go_duration,
    panic_window_seconds,
    parse_go_duration,
    resolve_metric_target,
    validate_annotations,
)
from labkit.serving.kpa import DeciderSpec

K = "autoscaling.knative.dev/"
MIN, MAX, INIT = K + "min-scale", K + "max-scale", K + "initial-scale"
PWP, PTP = K + "panic-window-percentage", K + "panic-threshold-percentage"
TARGET, TU, TBC = K + "target", K + "target-utilization-percentage", K + "target-burst-capacity"
WINDOW, RETENTION, DELAY = K + "window", K + "scale-to-zero-pod-retention-period", K + "scale-down-delay"
CLASS, METRIC, ALGO, ACT = K + "class", K + "metric", K + "metric-aggregation-algorithm", K + "activation-scale"
KPA, HPA = "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"

# name, annotations, config changes, expected error text ("" = valid)
VALIDATION_CASES = [
    ("nil annotations", None, {}, ""),
    ("empty annotations", {}, {}, ""),
    ("invalid class", {CLASS: "unsupported.knative.dev"},
     {}, f"invalid value: unsupported.knative.dev: {CLASS}"),
    ("non-knative.dev domain class", {CLASS: "some.other.domain"}, {}, ""),
    ("min-scale is 0", {MIN: "0"}, {}, ""),
    ("max-scale is 0", {MAX: "0"}, {}, ""),
    ("min-scale is -1", {MIN: "-1"}, {}, f"expected 0 <= -1 <= 2147483647: {MIN}"),
    ("max-scale is huge", {MAX: "2147483648"}, {}, f"expected 0 <= 2147483648 <= 2147483647: {MAX}"),
    ("max-scale is -1", {MAX: "-1"}, {}, f"expected 0 <= -1 <= 2147483647: {MAX}"),
    ("min-scale is foo", {MIN: "foo"}, {}, f"invalid value: foo: {MIN}"),
    ("max-scale is bar", {MAX: "bar"}, {}, f"invalid value: bar: {MAX}"),
    ("max/min-scale is bar", {MAX: "bar", MIN: "bar"}, {}, f"invalid value: bar: {MAX}, {MIN}"),
    ("min-scale is 5", {MIN: "5"}, {}, ""),
    ("max-scale is 2", {MAX: "2"}, {}, ""),
    ("min-scale 2, max-scale 5", {MIN: "2", MAX: "5"}, {}, ""),
    ("min-scale 5, max-scale 2", {MIN: "5", MAX: "2"}, {},
     f"max-scale=2 is less than min-scale=5: {MAX}, {MIN}"),
    ("min-scale 0, max-scale 0", {MIN: "0", MAX: "0"}, {}, ""),
    ("max-scale above the limit", {MAX: "11"}, {"max_scale_limit": 10},
     f"expected 1 <= 11 <= 10: {MAX}"),
    ("max-scale 0 with a limit", {MAX: "0"}, {"max_scale_limit": 10},
     f"max-scale=0 (unlimited), must be less than 10: {MAX}"),
    ("max-scale below the limit", {MAX: "9"}, {"max_scale_limit": 10}, ""),
    ("panic window percentage -1", {PWP: "-1"}, {}, f"expected 1 <= -1 <= 100: {PWP}"),
    ("panic window percentage 202", {PWP: "202"}, {}, f"expected 1 <= 202 <= 100: {PWP}"),
    ("panic window percentage fifty", {PWP: "fifty"}, {}, f"invalid value: fifty: {PWP}"),
    ("panic threshold 210", {PTP: "210"}, {}, ""),
    ("panic threshold 109", {PTP: "109"}, {}, f"expected 110 <= 109 <= 1000: {PTP}"),
    ("panic threshold 10009", {PTP: "10009"}, {}, f"expected 110 <= 10009 <= 1000: {PTP}"),
    ("panic threshold fifty", {PTP: "fifty"}, {}, f"invalid value: fifty: {PTP}"),
    ("target negative", {TARGET: "-11"}, {}, f"target -11 should be at least 0.01: {TARGET}"),
    ("target 0", {TARGET: "0"}, {}, f"target 0 should be at least 0.01: {TARGET}"),
    ("target non-numeric", {TARGET: "lots"}, {}, f"target lots should be at least 0.01: {TARGET}"),
    ("target okay", {TARGET: "11"}, {}, ""),
    ("TBC negative", {TBC: "-11"}, {}, f"invalid value: -11: {TBC}"),
    ("TBC 0", {TBC: "0"}, {}, ""),
    ("TBC 19870709", {TBC: "19870709"}, {}, ""),
    ("TBC -1", {TBC: "-1"}, {}, ""),
    ("TBC invalid", {TBC: "qarashen"}, {}, f"invalid value: qarashen: {TBC}"),
    ("TU too small", {TU: "0"}, {}, f"expected 1 <= 0 <= 100: {TU}"),
    ("TU too big", {TU: "101"}, {}, f"expected 1 <= 101 <= 100: {TU}"),
    ("TU invalid", {TU: "dghyak"}, {}, f"invalid value: dghyak: {TU}"),
    ("window invalid", {WINDOW: "jerry-was-a-racecar-driver"}, {},
     f"invalid value: jerry-was-a-racecar-driver: {WINDOW}"),
    ("window too short", {WINDOW: "1s"}, {}, f"expected 6s <= 1s <= 1h0m0s: {WINDOW}"),
    ("window too long", {WINDOW: "365h"}, {}, f"expected 6s <= 365h <= 1h0m0s: {WINDOW}"),
    ("window too precise", {WINDOW: "1m9s82ms"}, {},
     f"must be specified with at most second precision: {WINDOW}"),
    ("window valid for KPA", {WINDOW: "7s", CLASS: KPA}, {}, ""),
    ("window valid for another class", {WINDOW: "7s", CLASS: "test"}, {}, ""),
    ("window too long, KPA class", {WINDOW: "365h", CLASS: KPA}, {},
     f"expected 6s <= 365h <= 1h0m0s: {WINDOW}"),
    ("retention 0", {RETENTION: "0"}, {}, ""),
    ("retention 21m31s", {RETENTION: "21m31s"}, {}, ""),
    ("retention 311m", {RETENTION: "311m"}, {}, f"expected 0s <= 311m <= 1h0m0s: {RETENTION}"),
    ("retention -42s", {RETENTION: "-42s"}, {}, f"expected 0s <= -42s <= 1h0m0s: {RETENTION}"),
    ("retention invalid", {RETENTION: "twenty-two-minutes-and-five-seconds"}, {},
     f"invalid value: twenty-two-minutes-and-five-seconds: {RETENTION}"),
    ("scale down delay 0", {DELAY: "0"}, {}, ""),
    ("scale down delay 21m31s", {DELAY: "21m31s"}, {}, ""),
    ("scale down delay 311m", {DELAY: "311m"}, {}, f"expected 0s <= 311m <= 1h0m0s: {DELAY}"),
    ("scale down delay too precise", {DELAY: "42.5s"}, {},
     f"must be specified with at most second precision: {DELAY}"),
    ("scale down delay -42s", {DELAY: "-42s"}, {}, f"expected 0s <= -42s <= 1h0m0s: {DELAY}"),
    ("scale down delay invalid", {DELAY: "twenty-two-minutes-and-five-seconds"}, {},
     f"invalid value: twenty-two-minutes-and-five-seconds: {DELAY}"),
    ("all together now fail", {PTP: "fifty", PWP: "-11", MIN: "-4", MAX: "never"}, {},
     "\n".join([f"expected 0 <= -4 <= 2147483647: {MIN}", f"expected 1 <= -11 <= 100: {PWP}",
                f"invalid value: fifty: {PTP}", f"invalid value: never: {MAX}"])),
    ("all together now, succeed", {PTP: "125", PWP: "75", MIN: "5", MAX: "8", WINDOW: "1984s"},
     {}, ""),
    ("cpu metric for the default class (KPA)", {METRIC: "cpu"}, {}, f"invalid value: cpu: {METRIC}"),
    ("rps for KPA", {METRIC: "rps"}, {}, ""),
    ("concurrency for KPA", {METRIC: "concurrency"}, {}, ""),
    ("cpu for HPA", {CLASS: HPA, METRIC: "cpu"}, {}, ""),
    ("memory for HPA", {CLASS: HPA, METRIC: "memory"}, {}, ""),
    ("empty metric for HPA", {CLASS: HPA, METRIC: ""}, {}, f"invalid value: : {METRIC}"),
    ("metric of another class", {CLASS: "other", METRIC: "rps"}, {}, ""),
    ("initial scale 0 not allowed", {INIT: "0"}, {}, f"invalid value: 0: {INIT}"),
    ("initial scale 0 allowed", {INIT: "0"}, {"allow_zero_initial_scale": True}, ""),
    ("initial scale 2", {INIT: "2"}, {}, ""),
    ("initial scale invalid", {INIT: "invalid"}, {}, f"invalid value: invalid: {INIT}"),
    ("unknown algorithm for KPA", {CLASS: KPA, ALGO: "ewma"}, {}, f"invalid value: ewma: {ALGO}"),
    ("weighted algorithm for KPA", {CLASS: KPA, ALGO: "weighted-exponential"}, {}, ""),
    ("algorithm unchecked without an explicit class", {ALGO: "ewma"}, {}, ""),
    ("legacy key is named in the error", {K + "minScale": "-1"}, {},
     f"expected 0 <= -1 <= 2147483647: {K}minScale"),
    ("kebab key wins over legacy", {MIN: "1", K + "minScale": "bad"}, {}, ""),
    ("activation scale 1", {ACT: "1"}, {}, f"expected 2 <= 1 <= 2147483647: {ACT}"),
    ("activation scale 3", {ACT: "3", MAX: "5"}, {}, ""),
    ("activation scale above max-scale", {ACT: "6", MAX: "5"}, {},
     f"activation-scale=6 is greater than max-scale=5: {ACT}"),
    ("activation scale below min-scale", {ACT: "2", MIN: "3"}, {},
     f"activation-scale=2 is less than min-scale=3: {ACT}"),
    ("activation scale not a number", {ACT: "two"}, {}, f"expected 2 <= two <= 2147483647: {ACT}"),
]


@pytest.mark.parametrize("name,annotations,changes,want", VALIDATION_CASES,
                         ids=[c[0] for c in VALIDATION_CASES])
def test_validate_annotations(name, annotations, changes, want):
    config = replace(AutoscalerConfig(), **changes)
    assert "\n".join(annotation_errors(annotations, config)) == want


def test_validate_annotations_raises_all_problems_at_once():
    with pytest.raises(AnnotationError) as raised:
        validate_annotations({WINDOW: "1s", TARGET: "x"})
    assert raised.value.lines == [f"expected 6s <= 1s <= 1h0m0s: {WINDOW}",
                                  f"target x should be at least 0.01: {TARGET}"]


# --- ResolveMetricTarget ----------------------------------------------------------------------

BASE = AutoscalerConfig(container_concurrency_target_percentage=1.0)  # the ported test's config

# name, metric, containerConcurrency, target annotation, TU annotation (fraction), config TU,
# wanted target, wanted total
TARGET_CASES = [
    ("defaults", "concurrency", 0, None, None, None, 100, 100),
    ("default CC + 80% TU", "concurrency", 0, None, None, 0.8, 80, 100),
    ("CC 12, TU 80%, TU annotation 75%", "concurrency", 12, None, 0.75, 0.8, 9, 12),
    ("CC 10 and TU 80%", "concurrency", 10, None, None, 0.8, 8, 10),
    ("CC 1 and TU 80%", "concurrency", 1, None, None, 0.8, 0.8, 1),
    ("CC 1", "concurrency", 1, None, None, None, 1, 1),
    ("CC 10", "concurrency", 10, None, None, None, 10, 10),
    ("target annotation 1", "concurrency", 0, 1, None, None, 1, 1),
    ("target annotation 1 and TU 75%", "concurrency", 0, 1, None, 0.75, 0.75, 1),
    ("target annotation 10 and TU 75%", "concurrency", 0, 10, None, 0.75, 7.5, 10),
    ("CC above target annotation", "concurrency", 10, 1, None, None, 1, 1),
    ("target annotation above default", "concurrency", 0, 500, None, None, 500, 500),
    ("target annotation above CC is capped", "concurrency", 1, 10, None, None, 1, 1),
    ("rps defaults", "rps", 1, None, None, None, 140, 200),
    ("rps target annotation 1", "rps", 0, 1, None, None, 0.7, 1),
    ("rps TU annotation 75%", "rps", 0, None, 0.75, None, 150, 200),
    ("rps target annotation above default", "rps", 0, 300, None, None, 210, 300),
    ("tiny target floored at 0.01", "concurrency", 0, 0.01, 0.01, None, 0.01, 0.01),
]


@pytest.mark.parametrize("name,metric,cc,target,tu,config_tu,want_target,want_total",
                         TARGET_CASES, ids=[c[0] for c in TARGET_CASES])
def test_resolve_metric_target(name, metric, cc, target, tu, config_tu, want_target, want_total):
    config = BASE if config_tu is None else replace(
        BASE, container_concurrency_target_percentage=config_tu)
    got = resolve_metric_target(metric, cc, config, target, tu)
    assert got == pytest.approx((want_target, want_total), rel=1e-12)


# --- defaults, ConfigMap, panic window, durations --------------------------------------------

def test_knative_defaults():
    c = AutoscalerConfig()
    assert (c.container_concurrency_target_default, c.container_concurrency_target_percentage,
            c.target_burst_capacity, c.panic_threshold_percentage, c.panic_window_percentage,
            c.max_scale_up_rate, c.max_scale_down_rate, c.stable_window,
            c.scale_to_zero_grace_period, c.requests_per_second_target_default,
            c.activator_capacity, c.initial_scale) == (
        100, 0.7, 211, 200, 10, 1000, 2, 60, 30, 200, 100, 1)


def test_default_revision_gets_the_default_decider_spec():
    assert RevisionAutoscaling.resolve({}).decider_spec() == DeciderSpec()


def test_annotations_reach_the_decider_spec():
    s = RevisionAutoscaling.resolve({
        TARGET: "10", WINDOW: "120s", PWP: "51", PTP: "150", TBC: "-1", DELAY: "5m", ACT: "3",
        METRIC: "rps", K + "targetUtilizationPercentage": "50",
    })
    spec = s.decider_spec()
    assert (spec.scaling_metric, spec.target_value, spec.total_value) == ("rps", 5, 10)
    assert (spec.stable_window, s.panic_window, spec.panic_threshold) == (120, 61, 1.5)
    assert (spec.target_burst_capacity, spec.scale_down_delay, spec.activation_scale) == (-1, 300, 3)


def test_container_concurrency_caps_the_target_annotation():
    s = RevisionAutoscaling.resolve({TARGET: "50"}, container_concurrency=10)
    assert (s.target, s.total) == (7, 10)


def test_unreachable_revision_drops_min_scale_and_retention():
    anns = {MIN: "3", RETENTION: "10m"}
    assert RevisionAutoscaling.resolve(anns).min_scale == 3
    gone = RevisionAutoscaling.resolve(anns, reachable=False)
    assert (gone.min_scale, gone.scale_to_zero_pod_retention, gone.reachable) == (0, 0, False)
    assert not gone.decider_spec().reachable


@pytest.mark.parametrize("anns,config,want", [
    ({}, {}, 1),
    ({INIT: "4"}, {}, 4),
    ({INIT: "0"}, {"allow_zero_initial_scale": True}, 0),
    ({}, {"initial_scale": 0, "allow_zero_initial_scale": True}, 0),
])
def test_initial_scale(anns, config, want):
    assert RevisionAutoscaling.resolve(anns, replace(AutoscalerConfig(), **config)).initial_scale == want


def test_hpa_class_resolves_without_a_decider():
    s = RevisionAutoscaling.resolve({CLASS: HPA, METRIC: "cpu", TARGET: "60"})
    assert (s.autoscaler_class, s.metric, s.target) == (HPA, "cpu", 60)
    with pytest.raises(ValueError, match="HPA"):
        s.decider_spec()


def test_resolve_rejects_bad_annotations():
    with pytest.raises(AnnotationError, match="window"):
        RevisionAutoscaling.resolve({WINDOW: "5s"})


@pytest.mark.parametrize("stable,pct,want", [(60, 10, 6), (10, 10, 1), (600, 10, 60),
                                             (60, 51, 31), (6, 1, 1), (3600, 100, 3600),
                                             (50, 5, 3)])  # 2.5 s: halves round up
def test_panic_window_seconds(stable, pct, want):
    assert panic_window_seconds(stable, pct) == want


def test_from_configmap():
    c = AutoscalerConfig.from_configmap({
        "container-concurrency-target-percentage": "80",
        "stable-window": "2m", "enable-scale-to-zero": "false", "max-scale-up-rate": "10",
        "tick-interval": "2s", "_example": "ignored",
    })
    assert (c.container_concurrency_target_percentage, c.stable_window,
            c.enable_scale_to_zero, c.max_scale_up_rate) == (0.8, 120, False, 10)


@pytest.mark.parametrize("data,match", [
    ({"stable-window": "5s"}, "stable-window"),
    ({"stable-window": "60"}, "stable-window"),
    ({"max-scale-down-rate": "1"}, "max-scale-down-rate = 1, must be greater than 1.0"),
    ({"max-scale-up-rate": "fast"}, "max-scale-up-rate"),
    ({"target-burst-capacity": "-2"}, "target-burst-capacity"),
    ({"panic-window-percentage": "0"}, "panic-window-percentage"),
    ({"scale-to-zero-grace-period": "0s"}, "scale-to-zero-grace-period"),
    ({"enable-scale-to-zero": "yes"}, "enable-scale-to-zero"),
    ({"initial-scale": "0"}, "initial-scale"),
    ({"scale-down-delay": "1.5s"}, "scale-down-delay"),
    ({"container-concurrency-target-percentage": "0"}, "container-concurrency-target-percentage"),
])
def test_from_configmap_errors_name_the_key(data, match):
    with pytest.raises(ValueError, match=match):
        AutoscalerConfig.from_configmap(data)


@pytest.mark.parametrize("text,seconds", [
    ("60s", 60), ("1m30s", 90), ("1h", 3600), ("0", 0), ("-42s", -42), ("42.5s", 42.5),
    ("1m9s82ms", 69.082), ("1.5h", 5400), ("300ms", 0.3),
])
def test_parse_go_duration(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["60", "", "s", "1x", "1 s", "--1s"])
def test_parse_go_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_go_duration(text)


@pytest.mark.parametrize("seconds,text", [(6, "6s"), (3600, "1h0m0s"), (0, "0s"), (90, "1m30s"),
                                          (1314000, "365h0m0s")])
def test_format_go_duration(seconds, text):
    assert format_go_duration(seconds) == text
