"""The Canary controller keeps its last MAX_EVENTS events, in memory and in its saved state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.flagger.analysis import Event
from labkit.flagger.controller import MAX_EVENTS, CanaryController
from labkit.flagger.models import Canary

CANARY = {
    "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
    "metadata": {"name": "podinfo", "namespace": "test"},
    "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
             "service": {"port": 9898}, "analysis": {"interval": "1m", "threshold": 5}},
}


def test_only_the_newest_events_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_FLAGGER_STATE", str(tmp_path))
    # no saved state and nothing applied: the controller needs no cluster to record events
    canary = Canary.model_validate(CANARY, by_alias=True)
    controller = CanaryController(None, canary)  # type: ignore[arg-type]  # no cluster, as said above
    controller._record([Event("Normal", f"event {n}") for n in range(MAX_EVENTS + 50)])
    shown = [e["message"] for e in controller.status().detail["events"]]
    assert len(shown) == MAX_EVENTS
    assert shown[0] == "event 50" and shown[-1] == f"event {MAX_EVENTS + 49}"
    controller._save()
    saved = json.loads((tmp_path / "test.podinfo.json").read_text())
    assert [e["message"] for e in saved["events"]] == shown
