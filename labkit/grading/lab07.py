"""Checks for labs/07_knative_on_kubernetes.ipynb.

The givens of each task live here next to its check, so the notebook shows the same facts the
check recomputes from. Expected answers come from labkit's pure Knative models (names,
traffic resolution); no live component is imported: exercise 3's check is handed the running
Service and reads its state (and asks its URL) itself.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labkit.grading.checks import NotAnsweredError, check_choices, fail, passed
from labkit.manifests import ManifestError, load, load_file
from labkit.serving.models import KnativeService, resolve_traffic

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
    assert isinstance(service, KnativeService)  # _as_service wraps the block in one
    first, latest = TRAFFIC_TASK_REVISIONS
    table = resolve_traffic(service.traffic, latest, set(TRAFFIC_TASK_REVISIONS),
                            lambda tag: tag)
    split = dict(table.split)
    if split != {first: 90, latest: 10}:
        fail(f"traffic: the main URL would split {split}, not 90 % / 10 %.",
             f"one entry pins revisionName {first} at 90; one follows latestRevision at 10.")
    if dict(table.tags).get("candidate") != latest:
        fail(f"traffic: tag 'candidate' goes to {dict(table.tags).get('candidate')!r}.",
             "put tag: candidate on an entry that resolves to the latest revision (its percent "
             "can be 0: a tag URL always sends 100 % to its revision).")
    if any(t.revision_name == latest for t in service.traffic):
        fail("traffic: the 10 % share names the latest revision explicitly.",
             "use latestRevision: true, so the share moves on by itself with the next revision.")
    passed("traffic block: 90/10 with the candidate tag on the latest revision")


# --- Exercise 3: edit the manifest, see a new revision ------------------------------------

EDIT_TASK_TARGET = "students"


def _target(template: Any) -> str | None:
    """The TARGET env value of a revision template (None when not set)."""
    env = template.spec.containers[0].env if template.spec.containers else []
    return next((e.value for e in env if e.name == "TARGET"), None)


def check_edited_revision(svc: Any, path: object) -> None:
    """The live state after editing TARGET in the file at `path` and applying it: the file says
    `students`, the running Service `svc` (``knative_service(cluster, "hello")``) has a newer
    revision whose template says so, it is the latest ready one, and its URL answers with it
    (the check sends that request itself)."""
    if not hasattr(svc, "revisions") or not hasattr(svc, "url"):
        fail("svc: expected the running Service, knative_service(cluster, 'hello').",
             "pass the `svc` object from the cells above, and the `path` of the file.")
    try:
        [edited] = load_file(Path(str(path)))
    except (OSError, ValueError) as exc:
        fail(f"path: cannot read the edited manifest: {exc}", "write the edited text back to the same `path`.")
    if not isinstance(edited, KnativeService):
        fail(f"{path}: holds a {edited.kind}, not the Knative Service.", "edit the Service's text in place.")
    in_file = _target(edited.spec.template)
    if in_file != EDIT_TASK_TARGET:
        fail(f"{path}: TARGET is {in_file!r} in the file, not {EDIT_TASK_TARGET!r}.",
             "replace the value of the TARGET env in the text, then path.write_text(...) it.")
    names = list(svc.revisions)
    newest = svc.revisions[names[-1]] if names else None
    if newest is None or len(names) < 3 or _target(newest.template) != EDIT_TASK_TARGET:
        fail(f"the running Service has revisions {names}; none of them runs TARGET={EDIT_TASK_TARGET!r}.",
             "the file changed but the cluster did not: cluster.apply(path) after writing it.")
    if svc.latest_ready != names[-1]:
        fail(f"{names[-1]} is not ready yet (latest ready: {svc.latest_ready}).",
             "wait for the revision to become ready, then run the check again.")
    try:
        with urllib.request.urlopen(svc.url, timeout=30) as response:
            reply = response.read().decode()
    except OSError as exc:
        fail(f"{svc.url} did not answer: {exc}.", "is the cluster still running? Run the cells above again.")
    if f"Hello {EDIT_TASK_TARGET}!" not in reply:
        fail(f"{svc.url} answered {reply.strip()!r}.",
             "the route sends 100 % to the latest ready revision (latestRevision: true) once it is ready.")
    passed(f"{names[-1]} was created from your edited file and took the traffic")
