"""The InferenceService kind: faithful fields, KServe's checks, exports the CRD accepts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labkit.inference.models import InferenceService
from labkit.manifests import ManifestError, export, load_text

FULL = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
  annotations:
    serving.kserve.io/deploymentMode: Serverless
spec:
  predictor:
    minReplicas: 0
    maxReplicas: 3
    scaleMetric: concurrency
    scaleTarget: 10
    containerConcurrency: 0
    timeout: 60
    canaryTrafficPercent: 10
    batcher: {maxBatchSize: 32, maxLatency: 5}
    logger: {mode: all, url: http://message-dumper.default/}
    model:
      modelFormat: {name: sklearn, version: "1"}
      runtime: kserve-sklearnserver
      protocolVersion: v2
      storageUri: file:///models/iris
  transformer:
    minReplicas: 1
    containers:
      - name: kserve-container
        image: labkit/transformer
        command: [python, transformer.py]
"""


def one(text: str) -> InferenceService:
    (obj,) = load_text(text)
    assert isinstance(obj, InferenceService)
    return obj


def problems(text: str) -> str:
    with pytest.raises(ManifestError) as err:
        load_text(text)
    return str(err.value)


def test_full_spec_loads_and_exports_to_what_the_crd_accepts(
    crd_validate: Callable[[str], str],
) -> None:
    isvc = one(FULL)
    predictor = isvc.spec.predictor
    assert predictor.min_replicas == 0 and predictor.canary_traffic_percent == 10
    assert predictor.batcher is not None and predictor.batcher.max_latency == 5
    assert predictor.protocol_version == "v2" and predictor.storage_uri == "file:///models/iris"
    text = export(isvc)
    assert one(text) == isvc
    assert "OK" in crd_validate(text)


def test_kserve_docs_example_with_remote_storage_loads(crd_validate: Callable[[str], str]) -> None:
    """A cluster manifest stays loadable and exportable; only applying it needs local files."""
    isvc = one("""\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: sklearn-iris}
spec:
  predictor:
    model:
      modelFormat: {name: sklearn}
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
""")
    assert isvc.spec.predictor.protocol_version == "v1"  # KServe's default
    crd_validate(export(isvc))


def test_legacy_sklearn_predictor(crd_validate: Callable[[str], str]) -> None:
    isvc = one("""\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: legacy}
spec:
  predictor:
    sklearn: {storageUri: "pvc://models/iris", protocolVersion: v2}
""")
    predictor = isvc.spec.predictor
    assert predictor.model_format == "sklearn" and predictor.storage_uri == "pvc://models/iris"
    assert predictor.storage_uri_field == "spec.predictor.sklearn.storageUri"
    crd_validate(export(isvc))


def manifest(predictor: str, name: str = "bad", extra: str = "") -> str:
    body = "\n".join("    " + line for line in predictor.strip().splitlines())
    return (f"apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
            f"metadata: {{name: {name}}}\nspec:\n  predictor:\n{body}\n{extra}")


MODEL = "model: {modelFormat: {name: sklearn}, storageUri: /m}"


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ("minReplicas: 1", "spec.predictor: exactly one of [model, sklearn, containers]"),
        (MODEL + "\nsklearn: {storageUri: /m}", "exactly one of [model, sklearn, containers] must be specified in PredictorSpec (got model, sklearn)"),
        (MODEL + "\nminReplicas: 4\nmaxReplicas: 2", "spec.predictor.minReplicas: minReplicas (4) must not exceed maxReplicas (2)"),
        (MODEL + "\nminReplicas: -1", "spec.predictor.minReplicas"),
        (MODEL + "\ncanaryTrafficPercent: 150", "spec.predictor.canaryTrafficPercent"),
        (MODEL + "\nscaleMetric: cpu", "scaleMetric cpu needs the HPA"),
        (MODEL + "\nscaleMetric: gpu", "spec.predictor.scaleMetric"),
        (MODEL + "\nlogger: {mode: everything}", "spec.predictor.logger.mode"),
        (MODEL + "\nbatcher: {maxBatchSize: 0}", "spec.predictor.batcher.maxBatchSize"),
        ("model: {modelFormat: {name: tensorflow}, storageUri: /m}",
         "spec.predictor.model.modelFormat.name: modelFormat 'tensorflow' cannot be served here"),
        ("model: {modelFormat: {name: sklearn}, storageUri: /m, protocolVersion: grpc-v2}",
         "spec.predictor.model.protocolVersion: grpc-v2 is not served locally"),
        ("model: {modelFormat: {name: sklearn}, storageUri: 'ftp://host/m'}",
         "spec.predictor.model.storageUri: storageUri must be one of [gs://"),
        ("model: {modelFormat: {name: sklearn}}", "spec.predictor.model.storageUri: a storageUri is required"),
        ("model: {modelFormat: {name: sklearn}, storgeUri: /m}", "storageUri"),
    ],
)
def test_invalid_predictors_name_the_field(predictor: str, expected: str) -> None:
    assert expected in problems(manifest(predictor))


def test_errors_carry_file_line_and_object() -> None:
    text = problems(manifest(MODEL + "\ncanaryTrafficPercent: 101"))
    assert "InferenceService/bad: spec.predictor.canaryTrafficPercent" in text
    assert text.startswith("<string>:7: ")  # the line of canaryTrafficPercent


def test_names_follow_kserve_rules() -> None:
    assert "metadata.name" in problems(manifest(MODEL, name="1iris"))
    assert "metadata.name" in problems(manifest(MODEL, name="Iris"))


def test_transformer_rules() -> None:
    two = ("  transformer:\n    batcher: {maxBatchSize: 2}\n    containers:\n"
           "      - {name: a, image: x, command: [python]}\n      - {name: b, image: y, command: [python]}\n")
    text = problems(manifest(MODEL, extra=two))
    assert "spec.transformer.containers: a transformer runs exactly one container" in text
    assert "spec.transformer.batcher: the batcher batches model calls" in text
