"""Checks for labs/08_kserve_inferenceservice.ipynb.

The givens of each task live here next to its check, so the notebook shows the same facts the
check recomputes from. Expected answers come from labkit's pure KServe pieces (the manifest
model, the V2 codec, the canary rollout decision); no live component is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from labkit.grading.checks import NotAnsweredError, fail, passed
from labkit.inference.models import InferenceService
from labkit.inference.protocol import ProtocolError, decode_infer_request
from labkit.inference.rollout import Rollout, after_routing, traffic_block
from labkit.manifests import ManifestError, load_text

# --- Exercise 1: write an InferenceService ------------------------------------------------

DIGITS_TASK = {
    "metadata.name": "digits",
    "modelFormat.name": "sklearn",
    "storageUri": "data/models/digits-forest",
    "protocolVersion": "v2",
    "minReplicas": 0,
    "maxReplicas": 2,
    "batcher.maxBatchSize": 16,
}
"""The digits random forest, served with the V2 protocol, allowed to scale to zero, at most
two replicas, with requests batched up to 16 rows."""


def _unanswered(value: object) -> bool:
    return value is None or value is Ellipsis or value is NotImplemented


def _found_fields(obj: InferenceService) -> dict[str, Any]:
    predictor = obj.spec.predictor
    model = predictor.model
    batcher = predictor.batcher
    return {
        "metadata.name": obj.metadata.name,
        "modelFormat.name": model.model_format.name if model else None,
        "storageUri": predictor.storage_uri,
        "protocolVersion": predictor.protocol_version,
        "minReplicas": predictor.min_replicas,
        "maxReplicas": predictor.max_replicas,
        "batcher.maxBatchSize": batcher.max_batch_size if batcher else None,
    }


def check_digits_isvc(manifest: object) -> None:
    """The YAML text of the digits InferenceService described in DIGITS_TASK."""
    if _unanswered(manifest):
        raise NotAnsweredError("digits InferenceService: no answer yet.\n"
                               "HINT: write the YAML as a string, starting from the iris one.")
    if not isinstance(manifest, str):
        fail(f"expected the manifest as YAML text, got {type(manifest).__name__}.",
             "put the YAML between triple quotes: DIGITS_YAML = \"\"\"...\"\"\"")
    try:
        objects = load_text(manifest)
    except ManifestError as exc:
        fail(f"the manifest does not load:\n{exc}",
             "the message names the line and the field; compare with data/manifests/kserve-iris.yaml.")
    if len(objects) != 1 or not isinstance(objects[0], InferenceService):
        kinds = ", ".join(o.kind for o in objects) or "nothing"
        fail(f"expected one InferenceService, found {kinds}.",
             "apiVersion serving.kserve.io/v1beta1, kind InferenceService.")
    found = _found_fields(objects[0])
    wrong = [k for k, v in DIGITS_TASK.items() if found[k] != v]
    if wrong:
        fail(f"these fields are not as asked: {', '.join(wrong)}.",
             "minReplicas, maxReplicas and batcher sit on spec.predictor; modelFormat, "
             "protocolVersion and storageUri on spec.predictor.model.")
    passed("the digits InferenceService says what was asked")


# --- Exercise 2: a V2 request ---------------------------------------------------------------

V2_TASK_ROWS = ((5.9, 3.0, 5.1, 1.8), (4.9, 3.1, 1.5, 0.1), (6.3, 2.5, 4.9, 1.5))
"""Rows to send in one V2 inference request (iris features, float64)."""


def check_v2_request(make_request: object) -> None:
    """A function rows -> the JSON body (a dict) of a V2 infer request with one FP64 tensor."""
    if _unanswered(make_request):
        raise NotAnsweredError("v2_request: no answer yet.\nHINT: define def v2_request(rows): ...")
    if not callable(make_request):
        fail("v2_request should be a function.", "def v2_request(rows): return {...}")
    for rows in (V2_TASK_ROWS, V2_TASK_ROWS[:1]):
        body = make_request([list(r) for r in rows])
        if not isinstance(body, Mapping):
            fail(f"v2_request returned {type(body).__name__}, not a dict.",
                 "return the JSON body as a dict; the client serialises it.")
        try:
            request = decode_infer_request(orjson.dumps(body))
        except (ProtocolError, TypeError) as exc:
            fail(f"the model server would refuse this body: {exc}",
                 "each input needs name, shape, datatype and data; shape is [rows, features].")
        if len(request.inputs) != 1:
            fail(f"expected one input tensor, got {len(request.inputs)}.",
                 "all rows go into one tensor: the batch is its first dimension.")
        tensor = request.inputs[0]
        if tensor.datatype != "FP64" or list(tensor.array.shape) != [len(rows), 4]:
            fail(f"tensor {tensor.datatype} {list(tensor.array.shape)} for {len(rows)} row(s).",
                 "the datatype of Python floats is FP64; the shape follows the number of rows.")
        if tensor.array.tolist() != [list(r) for r in rows]:
            fail("the tensor's data are not the rows given.", "data is row-major: row after row.")
    passed("v2_request builds a valid V2 request for any number of rows")


# --- Exercise 3: canary arithmetic ----------------------------------------------------------

CANARY_TASK_STEPS: tuple[tuple[str, int | None], ...] = (
    ("model v1", None),
    ("model v2", 10),
    ("model v2", None),
    ("model v3", 25),
    ("model v3", 0),
)
"""Successive applies of one InferenceService `shop`: (model, canaryTrafficPercent or None
for no field). Every change of model makes a revision; every revision becomes ready."""


def replay_rollout(steps: Sequence[tuple[str, int | None]] = CANARY_TASK_STEPS,
                   name: str = "shop") -> tuple[dict[str, int], str | None]:
    """The predictor's traffic split and latestRolledoutRevision after `steps`, with KServe's
    rollout rules (labkit.inference.rollout), revisions named `<name>-predictor-0000N`."""
    rollout = Rollout()
    revisions: list[str] = []
    model = None
    split: list[tuple[str, int]] = []
    for new_model, percent in steps:
        new_revision = new_model != model
        latest_created = revisions[-1] if revisions else None
        if new_revision:
            revisions.append(f"{name}-predictor-{len(revisions) + 1:05d}")
            model = new_model
        entries, rollout = traffic_block(percent, rollout, new_revision=new_revision,
                                         latest_created=latest_created, tags=False)
        split = [(e.revision_name or revisions[-1], e.percent) for e in entries]
        rollout = after_routing(rollout, split)
    return dict(split), rollout.latest


def check_canary(split: object, rolled_out: object) -> None:
    """The traffic split (revision -> percent) and latestRolledoutRevision after the steps."""
    if _unanswered(split) or _unanswered(rolled_out):
        raise NotAnsweredError("canary: no answer yet.\nHINT: follow the steps one by one.")
    expected_split, expected_latest = replay_rollout()
    if not isinstance(split, Mapping):
        fail(f"split should be a dict revision -> percent, got {type(split).__name__}.",
             "e.g. {'shop-predictor-00001': 100}")
    given = {str(k): v for k, v in split.items() if v != 0}
    expected_split = {k: v for k, v in expected_split.items() if v != 0}
    wrong = sorted(set(given) ^ set(expected_split)) or sorted(
        k for k in expected_split if given[k] != expected_split[k])
    if wrong:
        fail(f"traffic split: look again at {', '.join(map(repr, wrong))}.",
             "removing canaryTrafficPercent promotes the newest revision to 100 %; "
             "canaryTrafficPercent: 0 sends everything back to the last rolled-out one.")
    passed("traffic split is right")
    if rolled_out != expected_latest:
        fail(f"latestRolledoutRevision {rolled_out!r} is not right.",
             "it is the last revision that once received 100 % of the traffic.")
    passed("latestRolledoutRevision is right")
