"""Model runtimes: turn the files a storageUri names into something that predicts.

Only scikit-learn is built in (KServe's `sklearn` model format). Two file formats:

- `.skops` (the `skops` package): the safe format. Loading refuses any type that is not known
  to be harmless, so a model file cannot run code.
- `.joblib` / `.pkl` / `.pickle`: what KServe's sklearn server loads. Unpickling runs whatever
  code the file contains, so labkit loads these only from the configured storage and prints a
  warning every time.

A folder holds exactly one model file, as KServe's sklearn server expects.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODEL_FILE_SUFFIXES",
    "PICKLE_WARNING",
    "LoadedModel",
    "ModelLoadError",
    "load_model",
    "supported_formats",
]

SAFE_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
MODEL_FILE_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES

PICKLE_WARNING = (
    "WARNING: {path} is a pickle (joblib): loading it runs any code it contains. Load only "
    "models you trust; save models with skops (.skops) for a format that cannot run code."
)


class ModelLoadError(RuntimeError):
    """The model files are missing, ambiguous, unsafe or not a model of the declared format."""


@dataclass
class LoadedModel:
    """A loaded estimator and what the protocols need to know about it."""

    name: str
    model_format: str
    path: Path
    estimator: Any
    load_seconds: float
    n_features: int | None
    outputs: dict[str, Callable[[np.ndarray], np.ndarray]] = field(repr=False)

    def predict(self, rows: np.ndarray, output: str = "predict") -> np.ndarray:
        """Run the estimator method named `output` (predict / predict_proba) on a 2-D array."""
        if rows.ndim != 2:
            raise ValueError(f"expected a 2-D batch (rows x features), got shape {list(rows.shape)}")
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise ValueError(
                f"model {self.name} expects {self.n_features} features per row, got {rows.shape[1]}"
            )
        return np.asarray(self.outputs[output](rows))


def supported_formats() -> list[str]:
    """modelFormat names this laptop can serve."""
    return ["sklearn"]


def load_model(name: str, path: Path, model_format: str = "sklearn") -> LoadedModel:
    """Load the single model file at `path` (a file, or a folder holding one model file)."""
    if model_format.lower() not in supported_formats():
        raise ModelLoadError(
            f"modelFormat {model_format!r} is not supported here; supported: "
            f"{', '.join(supported_formats())}"
        )
    file = _model_file(Path(path))
    started = time.perf_counter()
    if file.suffix in SAFE_SUFFIXES:
        estimator = _load_skops(file)
    else:
        print(PICKLE_WARNING.format(path=file), file=sys.stderr, flush=True)
        estimator = _load_joblib(file)
    seconds = time.perf_counter() - started
    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(
            f"{file} holds a {type(estimator).__name__}, which has no predict(); "
            "save a fitted scikit-learn estimator"
        )
    outputs = {
        method: getattr(estimator, method)
        for method in ("predict", "predict_proba")
        if callable(getattr(estimator, method, None))
    }
    n_features = getattr(estimator, "n_features_in_", None)
    return LoadedModel(
        name=name,
        model_format="sklearn",
        path=file,
        estimator=estimator,
        load_seconds=seconds,
        n_features=int(n_features) if n_features is not None else None,
        outputs=outputs,
    )


def _model_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix not in MODEL_FILE_SUFFIXES:
            raise ModelLoadError(
                f"{path}: unknown model file type {path.suffix!r}; use one of "
                f"{', '.join(MODEL_FILE_SUFFIXES)}"
            )
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model file or folder")
    found = sorted(p for p in path.iterdir() if p.suffix in MODEL_FILE_SUFFIXES and p.is_file())
    if not found:
        raise ModelLoadError(
            f"{path}: no model file in this folder (looked for *{', *'.join(MODEL_FILE_SUFFIXES)})"
        )
    if len(found) > 1:
        raise ModelLoadError(
            f"{path}: more than one model file ({', '.join(p.name for p in found)}); "
            "a model folder must hold exactly one"
        )
    return found[0]


def _load_skops(file: Path) -> Any:
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=file)
        if untrusted:
            raise ModelLoadError(
                f"{file}: refusing to load types that are not trusted by default: "
                f"{', '.join(untrusted)}"
            )
        return skops.io.load(file)
    except ModelLoadError:
        raise
    except Exception as exc:  # a corrupt zip, a truncated file, a newer skops schema...
        raise ModelLoadError(f"{file}: not a readable skops file: {type(exc).__name__}: {exc}") from exc


def _load_joblib(file: Path) -> Any:
    import joblib

    try:
        return joblib.load(file)
    except Exception as exc:  # unpickling can fail in any way the file's code chooses
        raise ModelLoadError(f"{file}: cannot unpickle: {type(exc).__name__}: {exc}") from exc
