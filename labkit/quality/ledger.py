"""Predictions kept by request id, true labels joined to them later, accuracy per model version.

In production the true label arrives long after the answer (a user corrects it, a parcel is
delivered, a fraud is confirmed), so quality cannot be judged from the response. The ledger
keeps each logged prediction under its request id with the version that made it; feedback
names the id and the true label, and each labelled row counts as correct or not for that
version. Counts are kept in total and for a sliding window of the most recent labelled rows,
so a gate can judge what a canary does now, not what it did an hour ago.

Feedback is checked before anything is counted: a batch with one bad item changes nothing.
The same label sent twice for one id counts once; a different label for a labelled id is a
conflict. Memory is bounded: the oldest predictions are forgotten past `max_predictions`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.quality.payloads import Label, Served, label_kind

__all__ = ["Accuracy", "FeedbackError", "Joined", "Ledger", "VersionKey"]

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
class Joined:
    """What one feedback item did: `duplicate` items were already counted."""

    request_id: str
    key: VersionKey
    rows: int
    correct: int
    duplicate: bool


@dataclass
class _Prediction:
    key: VersionKey
    predicted: tuple[Label, ...]
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
        self._predictions: OrderedDict[str, _Prediction] = OrderedDict()
        self._requests: OrderedDict[str, None] = OrderedDict()
        self._versions: dict[VersionKey, _Version] = {}

    # what the payload logger sends

    def record_request(self, request_id: str) -> None:
        """A logged request: remembered only to explain feedback that has no response."""
        self._requests[request_id] = None
        _trim(self._requests, self.max_predictions)

    def record_response(self, request_id: str, served: Served) -> bool:
        """Keep a prediction; False (and nothing counted) if this id was already recorded."""
        if request_id in self._predictions:
            return False
        key = (served.namespace, served.model, served.version)
        version = self._versions.setdefault(key, _Version(served.version_from, recent=deque(
            maxlen=self.max_window)))
        version.predictions += len(served.predicted)
        self._predictions[request_id] = _Prediction(key, served.predicted)
        _trim(self._predictions, self.max_predictions)
        return True

    # feedback

    def join(self, items: Sequence[tuple[Any, Any]], where: Sequence[str]) -> list[Joined]:
        """Join (request id, true label) items; all are checked before any is counted.

        A label is one value for a one-row request, or a list with one value per row.
        Raises FeedbackError for the first bad item (`where` names each item's place).
        """
        planned: dict[str, tuple[Label, ...]] = {}
        checked = [self._check(request_id, label, at, planned)
                   for (request_id, label), at in zip(items, where)]
        results = []
        for request_id, labels, duplicate in checked:
            prediction = self._predictions[request_id]
            correct = sum(p == t for p, t in zip(prediction.predicted, labels))
            if not duplicate:
                prediction.labels = labels
                version = self._versions[prediction.key]
                version.labelled += len(labels)
                version.correct += correct
                version.recent.extend(p == t for p, t in zip(prediction.predicted, labels))
            results.append(Joined(request_id, prediction.key, len(labels), correct, duplicate))
        return results

    def _check(self, request_id: Any, label: Any, at: str,
               planned: dict[str, tuple[Label, ...]]) -> tuple[str, tuple[Label, ...], bool]:
        if not isinstance(request_id, str) or not request_id:
            raise FeedbackError(400, f"{at}.id", "must be a non-empty string (the request's "
                                                 "ce-id / x-request-id)")
        prediction = self._predictions.get(request_id)
        if prediction is None:
            if request_id in self._requests:
                raise FeedbackError(409, f"{at}.id", f"request {request_id!r} was logged but "
                                    "its response was not (failed, or logger mode is request)")
            raise FeedbackError(404, f"{at}.id", f"no prediction logged with id {request_id!r}")
        labels = _labels(label, prediction.predicted, f"{at}.label")
        earlier = planned.get(request_id, prediction.labels)
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


def _show(labels: tuple[Label, ...]) -> str:
    return repr(labels[0]) if len(labels) == 1 else repr(list(labels))


def _trim(ordered: OrderedDict[str, Any], limit: int) -> None:
    while len(ordered) > limit:
        ordered.popitem(last=False)
