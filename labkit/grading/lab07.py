"""Checks for labs/07_knative_on_kubernetes.ipynb.

The givens of each task live here next to its check, so the notebook shows the same facts the
check recomputes from. Expected answers come from labkit's pure Knative models (names,
traffic resolution); no live component is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from labkit.grading.checks import NotAnsweredError, check_choices, fail, passed
from labkit.manifests import ManifestError, load
from labkit.serving.models import resolve_traffic

# --- Exercise 1: predict the names --------------------------------------------------------

NAMES_TASK_SERVICE = "shop"
NAMES_TASK_REVISION_NUMBER = 2
"""The Service `shop` in namespace `default` has just had its template changed once."""

NAME_KEYS = ("Configuration", "Route", "Revision", "Deployment", "PodAutoscaler",
             "ServerlessService", "private Service", "public Service", "Ingress")


def expected_names(service: str = NAMES_TASK_SERVICE,
                   number: int = NAMES_TASK_REVISION_NUMBER) -> dict[str, str]:
    revision = f"{service}-{number:05d}"
    return {
        "Configuration": service, "Route": service, "Revision": revision,
        "Deployment": f"{revision}-deployment", "PodAutoscaler": revision,
        "ServerlessService": revision, "private Service": f"{revision}-private",
        "public Service": revision, "Ingress": service,
    }


def check_object_names(answer: object) -> None:
    """The names Knative gives the objects of the newest revision of `shop`."""
    check_choices(
        "object names", answer, expected_names(),
        hint="Configuration, Route and Ingress take the Service's name; a revision is "
             "<configuration>-<generation as 5 digits>; the revision's Deployment adds "
             "'-deployment', its PodAutoscaler and ServerlessService share its name, and of its two "
             "Kubernetes Services the one with a selector is '<revision>-private'. "
             "Compare with the expand() output above.")


# --- Exercise 2: a traffic block ----------------------------------------------------------

TRAFFIC_TASK_REVISIONS = ("shop-00001", "shop-00002")
"""Both ready; shop-00002 is the latest. Wanted: 90 % stay on shop-00001, 10 % follow the
latest revision, and the latest is also reachable alone under the tag `candidate`."""


def _as_service(traffic: object) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "shop"},
        "spec": {"template": {"spec": {"containers": [{"image": "labkit/httpbin"}]}},
                 "traffic": traffic},
    }


def check_traffic_block(traffic: object) -> None:
    """A valid spec.traffic list giving 90/10 and a `candidate` tag on the latest revision."""
    if traffic is None or traffic is Ellipsis:
        raise NotAnsweredError("traffic: no answer yet.\nHINT: write a list of dicts.")
    if not isinstance(traffic, list) or not all(isinstance(t, Mapping) for t in traffic):
        fail(f"traffic: expected a list of dicts, got {type(traffic).__name__}.",
             "each entry is a dict such as {'revisionName': ..., 'percent': ...}.")
    try:
        [service] = load(_as_service(traffic))
    except (ManifestError, ValidationError) as exc:
        problems = "\n".join(f"  {line.split(': ', 2)[-1]}" for line in str(exc).splitlines())
        fail(f"traffic: Knative would refuse this block:\n{problems}",
             "camelCase keys (revisionName, latestRevision, percent, tag); percents sum to 100.")
    first, latest = TRAFFIC_TASK_REVISIONS
    table = resolve_traffic(service.traffic, latest, set(TRAFFIC_TASK_REVISIONS),  # type: ignore[attr-defined]
                            lambda tag: tag)
    split = dict(table.split)
    if split != {first: 90, latest: 10}:
        fail(f"traffic: the main URL would split {split}, not 90 % / 10 %.",
             f"one entry pins revisionName {first} at 90; one follows latestRevision at 10.")
    if dict(table.tags).get("candidate") != latest:
        fail(f"traffic: tag 'candidate' goes to {dict(table.tags).get('candidate')!r}.",
             "put tag: candidate on an entry that resolves to the latest revision (its percent "
             "can be 0: a tag URL always sends 100 % to its revision).")
    if any(t.revision_name == latest for t in service.traffic):  # type: ignore[attr-defined]
        fail("traffic: the 10 % share names the latest revision explicitly.",
             "use latestRevision: true, so the share moves on by itself with the next revision.")
    passed("traffic block: 90/10 with the candidate tag on the latest revision")


# --- Exercise 3: edit the manifest, see a new revision ------------------------------------

EDIT_TASK_TARGET = "students"


def check_edited_revision(revisions: object, reply: object) -> None:
    """After editing TARGET in the manifest: a third revision exists and answers."""
    if not isinstance(revisions, (list, tuple)) or not revisions:
        fail("revisions: expected the list of revision names (list(svc.revisions)).",
             "apply the edited manifest, then pass list(svc.revisions).")
    if len(revisions) < 3 or revisions[-1] != f"hello-{len(revisions):05d}":
        fail(f"revisions: {list(revisions)} — no new numbered revision after your edit.",
             "change a value inside spec.template (the env TARGET), not the traffic block, "
             "then cluster.apply() the file again.")
    if not isinstance(reply, str) or f"Hello {EDIT_TASK_TARGET}!" not in reply:
        fail(f"reply: {reply!r} does not greet {EDIT_TASK_TARGET!r}.",
             f"set the env TARGET to {EDIT_TASK_TARGET!r}; the route sends 100 % to the latest "
             "ready revision, so the next request reaches it.")
    passed(f"a new revision ({revisions[-1]}) was created and took the traffic")
