"""Lab 07 exercise 3's check reads the live cluster: only an edit that reached it passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.cluster import LocalCluster
from labkit.grading.lab07 import check_edited_revision
from labkit.manifests import export, load_file
from labkit.serving.models import KnativeService
from labkit.serving.service import knative_service

HELLO = Path(__file__).resolve().parents[1] / "data" / "manifests" / "knative-hello.yaml"


def test_only_an_applied_edit_passes(tmp_path: Path) -> None:
    [hello] = load_file(HELLO)
    assert isinstance(hello, KnativeService)
    two = hello.model_copy(deep=True)
    two.spec.template.spec.containers[0].env[0].value = "revision two"
    with LocalCluster() as cluster:
        cluster.apply(hello)
        cluster.apply(two)
        svc = knative_service(cluster, "hello")
        path = tmp_path / "hello.yaml"
        path.write_text(export(two))
        with pytest.raises(AssertionError, match="TARGET is 'revision two' in the file"):
            check_edited_revision(svc, path)
        path.write_text(path.read_text().replace("value: revision two", "value: students"))
        with pytest.raises(AssertionError, match="the cluster did not: cluster.apply"):
            check_edited_revision(svc, path)  # literal edits alone no longer pass
        cluster.apply(path)
        check_edited_revision(svc, path)
        assert list(svc.revisions)[-1] == "hello-00003"
        with pytest.raises(AssertionError, match="expected the running Service"):
            check_edited_revision(["hello-00001", "hello-00002", "hello-00003"], path)
