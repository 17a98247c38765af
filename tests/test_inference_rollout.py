"""KServe's canary rules as a pure decision (labkit.inference.rollout)."""

from __future__ import annotations

from labkit.inference.rollout import Rollout, TrafficEntry, after_routing, traffic_block

R1, R2, R3 = "m-predictor-00001", "m-predictor-00002", "m-predictor-00003"


def block(canary: int | None, rollout: Rollout, *, new: bool = True, latest: str | None = R1,
          tags: bool = False) -> tuple[list[TrafficEntry], Rollout]:
    return traffic_block(canary, rollout, new_revision=new, latest_created=latest, tags=tags)


def test_first_revision_takes_everything_even_with_a_canary_percent() -> None:
    assert block(10, Rollout(), latest=None) == ([TrafficEntry(100)], Rollout())
    assert block(None, Rollout(), latest=None) == ([TrafficEntry(100)], Rollout())


def test_canary_splits_between_the_latest_and_the_rolled_out_revision() -> None:
    entries, rollout = block(10, Rollout(R1))
    assert entries == [TrafficEntry(10), TrafficEntry(90, revision_name=R1)]
    assert rollout == Rollout(R1)
    assert entries[0].latest_revision and not entries[1].latest_revision


def test_tags_when_tag_routing_is_enabled() -> None:
    entries, _ = block(25, Rollout(R1), tags=True)
    assert [(e.tag, e.percent) for e in entries] == [("latest", 25), ("prev", 75)]


def test_promote_and_rollback() -> None:
    assert block(None, Rollout(R1))[0] == [TrafficEntry(100)]  # promote: field removed
    assert block(100, Rollout(R1))[0] == [TrafficEntry(100)]
    entries, _ = block(0, Rollout(R1), new=False, latest=R2)  # rollback of canary R2
    assert entries == [TrafficEntry(0), TrafficEntry(100, revision_name=R1)]


def test_lowering_a_promoted_revision_hands_traffic_back_to_the_previous() -> None:
    entries, rollout = block(30, Rollout(R2, R1), new=False, latest=R2)
    assert entries == [TrafficEntry(30), TrafficEntry(70, revision_name=R1)]
    assert rollout == Rollout(R1, None)
    # With nothing earlier to fall back to, the latest keeps everything.
    assert block(30, Rollout(R2), new=False, latest=R2) == ([TrafficEntry(100)], Rollout(R2))


def test_a_revision_with_all_the_traffic_becomes_rolled_out() -> None:
    assert after_routing(Rollout(), [(R1, 100)]) == Rollout(R1)
    assert after_routing(Rollout(R1), [(R2, 100)]) == Rollout(R2, R1)
    assert after_routing(Rollout(R1), [(R2, 10), (R1, 90)]) == Rollout(R1)
    assert after_routing(Rollout(R2, R1), [(R2, 100)]) == Rollout(R2, R1)
    assert after_routing(Rollout(R3, R2), []) == Rollout(R3, R2)
