"""The KServe manifests shipped for labs 08 and 09 load, export unchanged and pass KServe's CRD."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from labkit.inference.models import InferenceService
from labkit.manifests import export, load_file, load_text

MANIFESTS = sorted((Path(__file__).resolve().parents[1] / "data" / "manifests").glob("kserve-*.yaml"))


def test_there_are_kserve_manifests() -> None:
    assert MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kserve_manifest_exports_and_validates(path: Path, crd_validate: Callable[[str], str]) -> None:
    objects = load_file(path)
    assert all(isinstance(o, InferenceService) for o in objects)
    text = export(objects)
    assert load_text(text) == objects
    crd_validate(text)
