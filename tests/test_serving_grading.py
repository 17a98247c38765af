"""Lab 07's checks: right answers pass, wrong ones fail with a hint (no live components)."""

from __future__ import annotations

import pytest

from labkit.grading.checks import NotAnsweredError
from labkit.grading.lab07 import (
    check_object_names,
    check_traffic_block,
    expected_names,
)

GOOD_TRAFFIC = [
    {"revisionName": "shop-00001", "percent": 90},
    {"latestRevision": True, "percent": 10},
    {"latestRevision": True, "percent": 0, "tag": "candidate"},
]


def test_names_right_and_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    check_object_names(expected_names())
    assert "✓ object names: all 9 right" in capsys.readouterr().out
    wrong = {**expected_names(), "Deployment": "shop-00002"}
    with pytest.raises(AssertionError, match=r"look again at 'Deployment'[\s\S]*HINT"):
        check_object_names(wrong)
    with pytest.raises(NotAnsweredError):
        check_object_names(None)


def test_traffic_block_accepts_equivalent_answers() -> None:
    check_traffic_block(GOOD_TRAFFIC)
    check_traffic_block([{"revisionName": "shop-00001", "percent": 90},
                         {"latestRevision": True, "percent": 10, "tag": "candidate"}])


@pytest.mark.parametrize("traffic, why", [
    ([{"revisionName": "shop-00001", "percent": 90}, {"latestRevision": True, "percent": 20}],
     "sum to 110"),
    ([{"revisionName": "shop-00001", "percent": 10}, {"latestRevision": True, "percent": 90,
                                                      "tag": "candidate"}], "not 90 % / 10 %"),
    ([{"revisionName": "shop-00001", "percent": 90}, {"latestRevision": True, "percent": 10},
      {"revisionName": "shop-00001", "percent": 0, "tag": "candidate"}], "tag 'candidate' goes"),
    ([{"revisionName": "shop-00001", "percent": 90},
      {"revisionName": "shop-00002", "percent": 10, "tag": "candidate"}], "names the latest"),
    ([{"revision_name": "shop-00001", "percent": 100}], "refuse"),
])
def test_traffic_block_wrong_answers(traffic: list[dict], why: str) -> None:
    with pytest.raises(AssertionError, match=why):
        check_traffic_block(traffic)
