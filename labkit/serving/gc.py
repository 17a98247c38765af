"""Knative's revision garbage collection (pure): which old revisions of a Configuration go.

``config-gc`` (knative-serving) holds four settings; each limit may be ``"disabled"``:

- ``retain-since-create-time`` (48h): a revision younger than this is kept;
- ``retain-since-last-active-time`` (15h): one that a route referenced this recently is kept;
- ``min-non-active-revisions`` (20): at least this many non-active revisions are kept;
- ``max-non-active-revisions`` (1000): never more than this many, whatever their age.

*Active* revisions are never collected: the Configuration's latest ready revision, any
revision a route references (routing state not ``reserve``) and any revision annotated
``serving.knative.dev/no-gc: "true"``. Of the rest, oldest last-active first, a revision is
*stale* when both time limits (those not disabled) have passed; stale ones are deleted while
more than ``min`` remain; then, if more than ``max`` are left, the least recently active of
them go too.

Followed: knative/serving ``pkg/reconciler/gc/v2/gc.go`` (``Collect``, ``isRevisionActive``,
``isRevisionStale``, ``revisionLastActiveTime``: the routing state's last change, else the
creation time), ``pkg/gc/config.go`` and ``config/core/configmaps/gc.yaml`` (defaults, the
``disabled`` value, its examples); the annotation is ``RevisionPreservedAnnotationKey`` =
``serving.knative.dev/no-gc`` in ``pkg/apis/serving/register.go``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from labkit.serving.autoscaler_config import parse_go_duration

__all__ = ["NO_GC", "GCConfig", "RevisionRecord", "collect", "routed"]

NO_GC = "serving.knative.dev/no-gc"
DISABLED = "disabled"
_DURATIONS = {"retain-since-create-time": "retain_since_create_time",
              "retain-since-last-active-time": "retain_since_last_active_time"}
_COUNTS = {"min-non-active-revisions": "min_non_active_revisions",
           "max-non-active-revisions": "max_non_active_revisions"}


@dataclass(frozen=True)
class GCConfig:
    """``config-gc``; None is ``"disabled"``. Times in seconds."""

    retain_since_create_time: float | None = 48 * 3600.0
    retain_since_last_active_time: float | None = 15 * 3600.0
    min_non_active_revisions: int = 20
    max_non_active_revisions: int | None = 1000

    def __post_init__(self) -> None:
        for key, field in _DURATIONS.items():
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValueError(f"config-gc: {key}: must be non-negative or {DISABLED!r}, "
                                 f"got {value}")
        low, high = self.min_non_active_revisions, self.max_non_active_revisions
        if low < 0:
            raise ValueError(f"config-gc: min-non-active-revisions: must be non-negative, "
                             f"got {low}")
        if high is not None and high < 0:
            raise ValueError(f"config-gc: max-non-active-revisions: must be non-negative or "
                             f"{DISABLED!r}, got {high}")
        if high is not None and low > high:
            raise ValueError(f"config-gc: max-non-active-revisions ({high}) must be >= "
                             f"min-non-active-revisions ({low})")

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> GCConfig:
        """The ConfigMap's ``data`` (missing keys keep Knative's defaults)."""
        values: dict[str, float | int | None] = {}
        for key, text in data.items():
            if key.startswith("_"):
                continue  # _example
            if key not in _DURATIONS and key not in _COUNTS:
                raise ValueError(f"config-gc: unknown key {key!r} (known: "
                                 f"{', '.join([*_DURATIONS, *_COUNTS])})")
            if text.strip().lower() == DISABLED and key != "min-non-active-revisions":
                values[_DURATIONS.get(key) or _COUNTS[key]] = None
            elif key in _DURATIONS:
                try:
                    values[_DURATIONS[key]] = parse_go_duration(text)
                except ValueError as exc:
                    raise ValueError(f"config-gc: {key}: {exc}") from None
            else:
                try:
                    values[_COUNTS[key]] = int(text)
                except ValueError:
                    raise ValueError(f"config-gc: {key}: {text!r} is not a whole number") from None
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RevisionRecord:
    """What the collector knows of one revision of the Configuration."""

    name: str
    created: float
    routed: bool
    """Referenced by a route (routing state ``active``, or not yet labelled)."""
    last_routing_change: float | None = None
    """When its routing state last changed (``routingStateModified``), if ever."""
    annotations: Mapping[str, str] | None = None

    @property
    def last_active(self) -> float:
        return self.last_routing_change if self.last_routing_change is not None else self.created


def routed(revision: str, in_split: Collection[str], latest_created: str | None) -> bool:
    """A revision's routing state as the collector reads it: referenced while the route's
    split holds it, and the latest created one counts too until its route is settled (Knative
    labels a new revision ``pending``, not ``reserve``). When this flips, its last-active time
    is now; the live Service and the revisions simulator both ask here."""
    return revision in in_split or revision == latest_created


def _active(rev: RevisionRecord, latest_ready: str | None) -> bool:
    if rev.name == latest_ready:
        return True  # never the latest ready one, even if nothing routes to it
    if (rev.annotations or {}).get(NO_GC, "").lower() == "true":
        return True
    return rev.routed


def _stale(config: GCConfig, rev: RevisionRecord, now: float) -> bool:
    since_create, since_active = (config.retain_since_create_time,
                                  config.retain_since_last_active_time)
    if since_create is None and since_active is None:
        return False
    if since_create is not None and now - rev.created < since_create:
        return False
    return not (since_active is not None and now - rev.last_active < since_active)


def collect(config: GCConfig, revisions: Sequence[RevisionRecord], latest_ready: str | None,
            now: float) -> list[str]:
    """The revisions to delete at `now`, in the order Knative deletes them."""
    low, high = config.min_non_active_revisions, config.max_non_active_revisions
    if high is None and config.retain_since_create_time is None \
            and config.retain_since_last_active_time is None:
        return []  # every deletion setting is disabled
    if len(revisions) <= low:
        return []
    inactive = sorted((r for r in revisions if not _active(r, latest_ready)),
                      key=lambda r: r.last_active)
    if len(inactive) <= low:
        return []
    doomed: list[str] = []
    kept: list[RevisionRecord] = []
    for rev in inactive:
        if len(inactive) - len(doomed) > low and _stale(config, rev, now):
            doomed.append(rev.name)
        else:
            kept.append(rev)
    if high is None or len(kept) <= high:
        return doomed
    # Past the maximum: the least recently active of those left go too.
    newest_first = sorted(kept, key=lambda r: r.last_active, reverse=True)
    return doomed + [r.name for r in newest_first[high:]]
