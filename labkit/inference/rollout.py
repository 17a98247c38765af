"""KServe's canary rollout as a pure decision: which traffic block the predictor's Knative
Service gets, and which revisions count as rolled out.

KServe remembers the last revision that took 100 % of the traffic (`latestRolledoutRevision`)
and the one before (`previousRolledoutRevision`). With `canaryTrafficPercent: X` the newest
ready revision takes X % and the rolled-out one the rest; removing the field promotes the
newest to 100 %; `canaryTrafficPercent: 0` rolls back. Lowering the traffic of a revision that
was already promoted hands the rest back to the previous rolled-out revision. Followed:
kserve pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go and
docs/kfp/README.md, per /work/shared/reference/kserve-protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rollout", "TrafficEntry", "after_routing", "traffic_block"]


@dataclass(frozen=True)
class Rollout:
    latest: str | None = None
    """latestRolledoutRevision."""
    previous: str | None = None
    """previousRolledoutRevision."""


@dataclass(frozen=True)
class TrafficEntry:
    """One Knative traffic target: the latest ready revision, or a named one."""

    percent: int
    revision_name: str | None = None
    tag: str | None = None

    @property
    def latest_revision(self) -> bool:
        return self.revision_name is None


def traffic_block(
    canary_percent: int | None,
    rollout: Rollout,
    *,
    new_revision: bool,
    latest_created: str | None,
    tags: bool,
) -> tuple[list[TrafficEntry], Rollout]:
    """The traffic for this apply, and the rollout record it implies.

    `new_revision`: this apply creates a revision; `latest_created`: the newest revision
    before this apply; `tags`: serving.kserve.io/enable-tag-routing is "true".
    """
    everything = [TrafficEntry(100, tag="latest" if tags else None)]
    if canary_percent is None or canary_percent == 100 or rollout.latest is None:
        return everything, rollout
    stable = rollout.latest
    if not new_revision and latest_created == rollout.latest:
        # The newest revision was promoted already; its traffic now falls below 100 %.
        if rollout.previous is None:
            return everything, rollout
        stable, rollout = rollout.previous, Rollout(rollout.previous, None)
    return [
        TrafficEntry(canary_percent, tag="latest" if tags else None),
        TrafficEntry(100 - canary_percent, revision_name=stable, tag="prev" if tags else None),
    ], rollout


def after_routing(rollout: Rollout, split: list[tuple[str, int]]) -> Rollout:
    """A revision that now takes all the traffic becomes the latest rolled-out one."""
    if len(split) == 1 and split[0][1] == 100 and split[0][0] != rollout.latest:
        return Rollout(split[0][0], rollout.latest)
    return rollout
