"""storageUri resolution: where a model's files are on this laptop.

KServe's storage initializer copies the model named by `storageUri` into `/mnt/models` before
the server starts. labkit has no network for models, so it resolves the URI to a local folder
or file instead: `file://` and plain paths directly, `pvc://<claim>/<path>` inside a folder that
stands in for the claim, and remote schemes (gs://, s3://, https://, ...) with an error that
says why they cannot work offline and what to write instead. The few remote URIs KServe's own
guides use are the exception: SAMPLE_MODELS maps each to a local copy in data/models, so the
guides' manifests run unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["PVC_ROOT_ENV", "SAMPLE_MODELS", "StorageError", "resolve_storage_uri"]

_REPO_MODELS = Path(__file__).resolve().parents[2] / "data" / "models"
SAMPLE_MODELS: dict[str, Path] = {
    # KServe's sklearn iris (first InferenceService, V2 protocol and canary rollout guides,
    # https://kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary-example):
    # an iris classifier saved with joblib; data/models/iris is one (data/models/train.py), and
    # "model-2", the canary's "new/updated model", is the same classifier in skops' format.
    # Older guides name the bucket kfserving-examples, newer ones kserve-examples.
    **{f"gs://{bucket}/models/sklearn/1.0/{name}": _REPO_MODELS / folder
       for bucket in ("kfserving-examples", "kserve-examples")
       for name, folder in (("model", "iris"), ("model-2", "iris-skops"))},
}
"""Remote storageUris of the projects' samples -> the local copy labkit serves instead."""

PVC_ROOT_ENV = "LABKIT_PVC_ROOT"
"""Environment variable naming the folder whose subfolders stand in for PersistentVolumeClaims."""

# KServe's full list (pkg/controller/v1beta1/inferenceservice/utils SupportedStorageURIPrefixList);
# these are valid on a cluster but need a download labkit cannot do.
_REMOTE_SCHEMES = ("gs", "s3", "http", "https", "hdfs", "webhdfs", "oci", "oci+native",
                   "oci+fetch", "hf")
_FIELD = "spec.predictor.model.storageUri"


class StorageError(ValueError):
    """A storageUri that cannot be resolved to local model files; the message names the field."""


def resolve_storage_uri(
    uri: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    pvc_root: str | os.PathLike[str] | None = None,
    field: str = _FIELD,
) -> Path:
    """The local file or folder that `uri` names; StorageError if it cannot be had offline.

    `base_dir` anchors relative paths (the manifest's folder; default the working directory).
    `pvc_root` is the folder holding one subfolder per claim (default: $LABKIT_PVC_ROOT).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"{field}: must be a non-empty string, got {uri!r}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if uri.rstrip("/") in SAMPLE_MODELS:
        path = SAMPLE_MODELS[uri.rstrip("/")]
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(
                f"{field}: {uri!r} names host {parts.netloc!r}; a file:// URI must be "
                "file:///absolute/path (three slashes)"
            )
        path = Path(unquote(parts.path))
    elif scheme == "pvc":
        path = _pvc_path(uri, parts.netloc, unquote(parts.path), pvc_root, field)
    elif scheme in _REMOTE_SCHEMES:
        raise StorageError(
            f"{field}: {uri!r} needs a download from {scheme}:// storage, which labkit cannot do "
            "offline; copy the model into a local folder and use file:///that/folder, a plain "
            "path, or pvc://<claim>/<path>"
        )
    elif scheme and len(scheme) > 1:  # one letter: a Windows drive, i.e. a plain path
        raise StorageError(
            f"{field}: unknown scheme {scheme!r} in {uri!r}; KServe accepts gs://, s3://, pvc://, "
            "file://, http(s)://, hdfs://, webhdfs://, oci://, hf:// and local paths "
            "(offline: file://, pvc:// and local paths)"
        )
    else:
        path = Path(uri)
        if not path.is_absolute():
            path = Path(base_dir or os.getcwd()) / path
    if not path.exists():
        raise StorageError(f"{field}: {uri!r} resolves to {path}, which does not exist")
    return path


def _pvc_path(
    uri: str, claim: str, rest: str, pvc_root: str | os.PathLike[str] | None, field: str
) -> Path:
    if not claim:
        raise StorageError(f"{field}: {uri!r} has no claim name; write pvc://<claim>/<path>")
    root = pvc_root if pvc_root is not None else os.environ.get(PVC_ROOT_ENV)
    if not root:
        raise StorageError(
            f"{field}: {uri!r} refers to PersistentVolumeClaim {claim!r}, but no local folder "
            f"stands in for claims; set {PVC_ROOT_ENV} (or the cluster's pvc_root) to a folder "
            f"with a subfolder {claim!r}"
        )
    claim_dir = Path(root) / claim
    if not claim_dir.is_dir():
        raise StorageError(
            f"{field}: PersistentVolumeClaim {claim!r} of {uri!r} is not there: no folder {claim_dir}"
        )
    path = (claim_dir / rest.lstrip("/")).resolve()
    if claim_dir.resolve() not in (path, *path.parents):
        raise StorageError(f"{field}: {uri!r} leaves the claim's folder {claim_dir} ('..')")
    return path
