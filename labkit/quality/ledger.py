"""Predictions kept by request id, true labels joined to them later, accuracy per model version.

In production the true label arrives long after the answer (a user corrects it, a parcel is
delivered, a fraud is confirmed), so quality cannot be judged from the response. The ledger
keeps each logged prediction under its request id and the version that made it: one per
(request id, version), so a mirrored copy (Istio's mirror keeps the request's x-request-id,
which KServe's logger sends as the event id) is kept beside the answer the user got. Feedback
names the id and the true label; each row of each version's prediction for that request counts
as correct or not for that version. A copy logged after its labels arrived is counted when it
arrives. Counts are kept in total and for a sliding window of the most recent labelled rows,
so a gate can judge what a canary does now, not what it did an hour ago.

Feedback is checked before anything is counted: a batch with one bad item changes nothing.
The same label sent twice for one id counts once; a different label for a labelled id is a
conflict. Memory is bounded: the oldest requests are forgotten past `max_predictions`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.quality.payloads import Label, Served, label_kind

__all__ = ["Accuracy", "Counted", "FeedbackError", "Joined", "Ledger", "Logged", "VersionKey"]

VersionKey = tuple[str, str, str]
"""(namespace, model, version)."""


class FeedbackError(ValueError):
    """Feedback that cannot be joined: `status` is the HTTP answer, `at` the item's place."""

    def __init__(self, status: int, at: str, message: str) -> None:
        self.status = status
        self.at = at
        self.message = message
        super().__init__(f"{at}: {message}")


@dataclass(frozen=True)
class Accuracy:
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Counted:
    """One version's labelled rows of one request, and how many it predicted right."""

    key: VersionKey
    rows: int
    correct: int


@dataclass(frozen=True)
class Joined:
    """What one feedback item did, per version that answered the request (the answer and any
    mirrored copy); `duplicate` items were already counted."""

    request_id: str
    counts: tuple[Counted, ...]
    duplicate: bool

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.counts)

    @property
    def correct(self) -> int:
        return sum(c.correct for c in self.counts)


@dataclass(frozen=True)
class Logged:
    """What recording a response did: `new` is False for a repeated event (nothing counted);
    `counted` is set when the request's labels were already known (a copy logged late)."""

    new: bool
    counted: Counted | None = None


@dataclass
class _Answers:
    """One request id: the labels each version predicted, and the true labels once known."""

    predicted: dict[VersionKey, tuple[Label, ...]] = field(default_factory=dict)
    labels: tuple[Label, ...] | None = None


@dataclass
class _Version:
    version_from: str
    predictions: int = 0
    labelled: int = 0
    correct: int = 0
    recent: deque[bool] = field(default_factory=deque)


class Ledger:
    def __init__(self, max_predictions: int = 100_000, max_window: int = 10_000) -> None:
        self.max_predictions = max_predictions
        self.max_window = max_window
        self._answers: OrderedDict[str, _Answers] = OrderedDict()
        self._requests: OrderedDict[str, None] = OrderedDict()
        self._versions: dict[VersionKey, _Version] = {}

    # what the payload logger sends

    def record_request(self, request_id: str) -> None:
        """A logged request: remembered only to explain feedback that has no response."""
        self._requests[request_id] = None
        _trim(self._requests, self.max_predictions)

    def record_response(self, request_id: str, served: Served) -> Logged:
        """Keep a version's prediction for a request (nothing counted if this request and
        version were recorded already). If the request's labels are known, the prediction is
        counted against them now; a copy with another number of rows is not."""
        key = (served.namespace, served.model, served.version)
        answers = self._answers.get(request_id)
        if answers is None:
            answers = self._answers[request_id] = _Answers()
            _trim(self._answers, self.max_predictions)
        elif key in answers.predicted:
            return Logged(False)
        version = self._versions.setdefault(key, _Version(served.version_from, recent=deque(
            maxlen=self.max_window)))
        version.predictions += len(served.predicted)
        answers.predicted[key] = served.predicted
        if answers.labels is None or len(answers.labels) != len(served.predicted):
            return Logged(True)
        return Logged(True, self._count(key, served.predicted, answers.labels))

    # feedback

    def join(self, items: Sequence[tuple[Any, Any]], where: Sequence[str]) -> list[Joined]:
        """Join (request id, true label) items; all are checked before any is counted.

        A label is one value for a one-row request, or a list with one value per row; it
        labels the rows of every version that answered the request.
        Raises FeedbackError for the first bad item (`where` names each item's place).
        """
        planned: dict[str, tuple[Label, ...]] = {}
        checked = [self._check(request_id, label, at, planned)
                   for (request_id, label), at in zip(items, where)]
        results = []
        for request_id, labels, duplicate in checked:
            answers = self._answers[request_id]
            if duplicate:
                counts = tuple(Counted(key, len(labels), sum(_hits(predicted, labels)))
                               for key, predicted in answers.predicted.items())
            else:
                answers.labels = labels
                counts = tuple(self._count(key, predicted, labels)
                               for key, predicted in answers.predicted.items())
            results.append(Joined(request_id, counts, duplicate))
        return results

    def _count(self, key: VersionKey, predicted: tuple[Label, ...],
               labels: tuple[Label, ...]) -> Counted:
        hits = _hits(predicted, labels)
        version = self._versions[key]
        version.labelled += len(hits)
        version.correct += sum(hits)
        version.recent.extend(hits)
        return Counted(key, len(hits), sum(hits))

    def _check(self, request_id: Any, label: Any, at: str,
               planned: dict[str, tuple[Label, ...]]) -> tuple[str, tuple[Label, ...], bool]:
        if not isinstance(request_id, str) or not request_id:
            raise FeedbackError(400, f"{at}.id", "must be a non-empty string (the request's "
                                                 "ce-id / x-request-id)")
        answers = self._answers.get(request_id)
        if answers is None:
            if request_id in self._requests:
                raise FeedbackError(409, f"{at}.id", f"request {request_id!r} was logged but "
                                    "its response was not (failed, or logger mode is request)")
            raise FeedbackError(404, f"{at}.id", f"no prediction logged with id {request_id!r}")
        # the labels must fit every version's rows (a mirrored copy has the answer's rows)
        per_version = [_labels(label, predicted, f"{at}.label") for predicted in answers.predicted.values()]
        labels = per_version[0]
        earlier = planned.get(request_id, answers.labels)
        if earlier is not None and earlier != labels:
            raise FeedbackError(409, f"{at}.label", f"request {request_id!r} is already labelled "
                                f"{_show(earlier)}; got {_show(labels)}")
        planned[request_id] = labels
        return request_id, labels, earlier is not None

    # readings

    def versions(self) -> list[VersionKey]:
        return sorted(self._versions)

    def version_from(self, key: VersionKey) -> str:
        return self._versions[key].version_from

    def predictions(self, key: VersionKey) -> int:
        version = self._versions.get(key)
        return version.predictions if version else 0

    def accuracy(self, key: VersionKey, window: int | None = None) -> Accuracy:
        """Labelled and correct rows of a version: all of them, or the `window` most recent."""
        version = self._versions.get(key)
        if version is None:
            return Accuracy(0, 0)
        if not window:
            return Accuracy(version.labelled, version.correct)
        if window > self.max_window:
            raise ValueError(f"window {window} is over the {self.max_window} rows kept per version")
        recent = list(version.recent)[-window:]
        return Accuracy(len(recent), sum(recent))


def _labels(label: Any, predicted: tuple[Label, ...], at: str) -> tuple[Label, ...]:
    if label is None:
        raise FeedbackError(400, at, "missing: the true label (a list, one per row, for "
                                     "a request of several rows)")
    rows = len(predicted)
    labels = label if isinstance(label, list) else [label]
    if len(labels) != rows:
        raise FeedbackError(400, at, f"the request had {rows} row(s), got {len(labels)} label(s)")
    for index, (value, guess) in enumerate(zip(labels, predicted)):
        place = f"{at}[{index}]" if isinstance(label, list) else at
        kind, expected = label_kind(value), label_kind(guess)
        if kind is None:
            raise FeedbackError(400, place, f"{value!r} is not a label")
        if kind != expected:
            raise FeedbackError(400, place, f"{value!r} is a {kind}, the model predicts "
                                            f"{expected}s (e.g. {guess!r})")
    return tuple(labels)


def _hits(predicted: tuple[Label, ...], labels: tuple[Label, ...]) -> list[bool]:
    return [p == t for p, t in zip(predicted, labels)]


def _show(labels: tuple[Label, ...]) -> str:
    return repr(labels[0]) if len(labels) == 1 else repr(list(labels))


def _trim(ordered: OrderedDict[str, Any], limit: int) -> None:
    while len(ordered) > limit:
        ordered.popitem(last=False)
