"""Lab 08's InferenceService builder: choices -> validated YAML, Knative objects, prediction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from labkit.widgets.isvc_builder import isvc_dashboard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the storageUri paths are relative to the repository, as in lab 08


def test_baseline_is_one_revision_with_a_v2_answer() -> None:
    d = isvc_dashboard()
    assert d.result is not None
    p = d.result
    assert d.error is None
    assert dict(p.table.split) == {"sklearn-iris-predictor-00001": 100}
    assert ("Deployment", "sklearn-iris-predictor-00001-deployment") in p.kinds()
    assert ("Route", "sklearn-iris-predictor") in p.kinds()
    assert p.status == 200 and p.path == "/v2/models/sklearn-iris/infer"
    assert p.response["outputs"][0]["data"] == [1]  # versicolor
    annotations = next(o for o in p.objects if o["kind"] == "Revision")["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert annotations["autoscaling.knative.dev/max-scale"] == "3"


def test_protocol_choice_changes_the_call_and_makes_a_revision() -> None:
    d = isvc_dashboard(protocol="v1")
    assert d.result is not None
    assert d.result.path == "/v1/models/sklearn-iris:predict"
    assert d.result.response == {"predictions": [1]}
    assert dict(d.result.table.split) == {"sklearn-iris-predictor-00002": 100}  # no canary field: promoted


def test_canary_percent_splits_between_new_and_rolled_out_revision() -> None:
    d = isvc_dashboard(model="iris (skops)", canary_percent=10)
    assert d.result is not None
    assert dict(d.result.table.split) == {"sklearn-iris-predictor-00002": 10, "sklearn-iris-predictor-00001": 90}
    assert d.result.manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10
    d.set(canary_percent=100)
    assert "canaryTrafficPercent" not in d.result.manifest["spec"]["predictor"]
    assert dict(d.result.table.split) == {"sklearn-iris-predictor-00002": 100}


def test_unchanged_predictor_makes_no_revision_so_a_canary_has_nothing_to_split() -> None:
    d = isvc_dashboard(canary_percent=20)
    assert d.result is not None
    assert dict(d.result.table.split) == {"sklearn-iris-predictor-00001": 100}


def test_scale_bounds_reach_the_revision_and_bad_ones_are_refused() -> None:
    d = isvc_dashboard(min_replicas=0, max_replicas=0)
    assert d.result is not None
    revision = [o for o in d.result.objects if o["kind"] == "Revision"][-1]
    assert revision["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert "autoscaling.knative.dev/max-scale" not in revision["metadata"]["annotations"]
    d.set(min_replicas=3, max_replicas=2)
    assert d.error is not None and "spec.predictor.minReplicas" in d.error


@pytest.mark.parametrize(("settings", "field"), [
    ({"protocol": "grpc-v2"}, "spec.predictor.model.protocolVersion"),
    pytest.param({"model_format": "lightgbm"}, "spec.predictor.model.modelFormat.name",
                 marks=pytest.mark.skipif(importlib.util.find_spec("lightgbm") is not None,
                                          reason="lightgbm is installed, so labkit serves it")),
])
def test_choices_labkit_cannot_serve_name_the_field(settings: dict, field: str) -> None:
    d = isvc_dashboard()
    d.set(**settings)
    assert d.error is not None and field in d.error
