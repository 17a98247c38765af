"""labkit.inference.hops: one prediction through the mesh, timed hop by hop (live)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.cluster import LocalCluster
from labkit.inference.hops import LIVE_HOPS, measure_path, medians, model_server_pids
from labkit.net import process_alive

REPO = Path(__file__).resolve().parents[1]
BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}]}


def test_hops_add_up_to_the_server_sidecars_upstream_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the manifest's storageUri is relative to the repository
    with LocalCluster() as cluster:
        cluster.apply(REPO / "data" / "manifests" / "kserve-iris.yaml")
        rows = measure_path(cluster, "sklearn-iris", "sklearn-iris.default.example.com", BODY, n=5)
        pids = model_server_pids(cluster)
    assert len(rows) == 5 and pids
    assert not any(process_alive(pid) for pid in pids)
    for row in rows:
        assert set(row) == {*LIVE_HOPS, "end to end", "no mesh"}
        assert row["predict"] > 0 and row["queue-proxy"] > 0
        # the hops partition the end-to-end time (each is a difference of nested times)
        assert sum(row[hop] for hop in LIVE_HOPS) == pytest.approx(row["end to end"], rel=1e-6)
    typical = medians(rows)
    assert typical["end to end"] > typical["predict"]
