"""storageUri resolution: local schemes resolve, remote ones fail offline naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.inference.storage import PVC_ROOT_ENV, SAMPLE_MODELS, StorageError, resolve_storage_uri


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "iris"
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(b"x")
    return folder


def test_file_uri_and_plain_paths(model_dir: Path, tmp_path: Path) -> None:
    assert resolve_storage_uri(f"file://{model_dir}") == model_dir
    assert resolve_storage_uri(str(model_dir)) == model_dir
    assert resolve_storage_uri("models/iris", base_dir=tmp_path) == tmp_path / "models" / "iris"


def test_file_uri_with_a_host_is_refused(model_dir: Path) -> None:
    with pytest.raises(StorageError, match="three slashes"):
        resolve_storage_uri(f"file://server{model_dir}")


def test_pvc_maps_to_a_claim_folder(tmp_path: Path, model_dir: Path) -> None:
    assert resolve_storage_uri("pvc://models/iris", pvc_root=tmp_path) == model_dir


def test_pvc_root_from_the_environment(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PVC_ROOT_ENV, str(tmp_path))
    assert resolve_storage_uri("pvc://models/iris") == model_dir


def test_pvc_without_a_root_says_how_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PVC_ROOT_ENV, raising=False)
    with pytest.raises(StorageError, match=PVC_ROOT_ENV):
        resolve_storage_uri("pvc://models/iris")


def test_pvc_missing_claim_and_escape(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(StorageError, match="'other' .* is not there"):
        resolve_storage_uri("pvc://other/iris", pvc_root=tmp_path)
    with pytest.raises(StorageError, match="leaves the claim"):
        resolve_storage_uri("pvc://models/../../etc", pvc_root=tmp_path)
    with pytest.raises(StorageError, match="no claim name"):
        resolve_storage_uri("pvc:///iris", pvc_root=tmp_path)


@pytest.mark.parametrize(
    "uri",
    ["gs://kfserving-examples/models/sklearn/1.0/other-model", "s3://bucket/model",
     "https://example.com/model.joblib", "hf://org/model"],
)
def test_remote_schemes_fail_offline_naming_the_field(uri: str) -> None:
    with pytest.raises(StorageError) as err:
        resolve_storage_uri(uri)
    message = str(err.value)
    assert message.startswith("spec.predictor.model.storageUri: ")
    assert "offline" in message and uri in message


def test_the_guides_sample_models_resolve_to_local_copies() -> None:
    for uri, local in SAMPLE_MODELS.items():
        assert resolve_storage_uri(uri) == resolve_storage_uri(uri + "/") == local
        assert any(local.iterdir()), f"{local} (for {uri}) holds no model"


def test_unknown_scheme_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unknown scheme 'ftp'"):
        resolve_storage_uri("ftp://host/model")
    with pytest.raises(StorageError, match="does not exist"):
        resolve_storage_uri(str(tmp_path / "nothing"))
    with pytest.raises(StorageError, match="non-empty"):
        resolve_storage_uri("  ")


def test_the_field_name_can_be_chosen(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"^spec\.transformer\.storageUri: "):
        resolve_storage_uri("s3://b/m", field="spec.transformer.storageUri")
