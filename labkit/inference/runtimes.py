"""Model runtimes: turn the files a storageUri names into something that predicts.

`FORMATS` is the one table of the model formats labkit serves, by KServe's `modelFormat` name:
the Python package each needs (and the pip distribution that installs it), the model files it
loads, and the ServingRuntime that serves it on a cluster. The InferenceService admission check
(`labkit.inference.models`) and the model server both read it, so they cannot disagree.

- `sklearn` (kserve-sklearnserver): `.skops` (the `skops` package) is the safe format: loading
  refuses any type not known to be harmless, so a model file cannot run code. `.joblib` /
  `.pkl` / `.pickle` are what KServe's sklearn server loads; unpickling runs whatever code the
  file contains, so labkit loads these only from the configured storage and prints a warning.
- `xgboost` (kserve-xgbserver): a Booster saved with `save_model` (`.bst`, `.json`, `.ubj`),
  predicted on a DMatrix as KServe's xgbserver does (python/xgbserver/xgbserver/model.py).
- `lightgbm` (kserve-lgbserver): a Booster saved as `model.bst` (lgbserver's MODEL_EXTENSIONS),
  whose predict gives class probabilities for a multiclass model, as lgbserver returns them.
- `onnx` (served by Triton on a cluster, kserve-tritonserver's supportedModelFormats): a
  `.onnx` graph run with onnxruntime; `predict` is its first output, `predict_proba` the second
  when there is one, and every graph output is also served under its own name, as Triton does.

A folder holds exactly one model file of its format, as KServe's servers expect.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labkit.suggest import did_you_mean

__all__ = [
    "FORMATS",
    "PICKLE_WARNING",
    "FormatRuntime",
    "LoadedModel",
    "ModelLoadError",
    "format_problem",
    "load_model",
    "supported_formats",
]

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")

PICKLE_WARNING = (
    "WARNING: {path} is a pickle (joblib): loading it runs any code it contains. Load only "
    "models you trust; save models with skops (.skops) for a format that cannot run code."
)

Outputs = dict[str, Callable[[np.ndarray], np.ndarray]]


class ModelLoadError(RuntimeError):
    """The model files are missing, ambiguous, unsafe or not a model of the declared format."""


@dataclass(frozen=True)
class Loaded:
    """What a format's loader returns: the model object, its feature count, its outputs."""

    estimator: Any
    n_features: int | None
    outputs: Outputs


@dataclass(frozen=True)
class FormatRuntime:
    """One modelFormat: `module` must import, `distribution` is what `pip install` takes."""

    name: str
    module: str
    distribution: str
    suffixes: tuple[str, ...]
    serving_runtime: str
    load: Callable[[Path], Loaded] = field(repr=False)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass
class LoadedModel:
    """A loaded model and what the protocols need to know about it."""

    name: str
    model_format: str
    path: Path
    estimator: Any
    load_seconds: float
    n_features: int | None
    outputs: Outputs = field(repr=False)

    def predict(self, rows: np.ndarray, output: str = "predict") -> np.ndarray:
        """Run the model output named `output` (predict / predict_proba / ...) on a 2-D array."""
        if rows.ndim != 2:
            raise ValueError(f"expected a 2-D batch (rows x features), got shape {list(rows.shape)}")
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise ValueError(
                f"model {self.name} expects {self.n_features} features per row, got {rows.shape[1]}"
            )
        return np.asarray(self.outputs[output](rows))


# ---------------------------------------------------------------------------------------------
# loaders, one per format (each imports its package only when used)


def _load_sklearn(file: Path) -> Loaded:
    if file.suffix in PICKLE_SUFFIXES:
        print(PICKLE_WARNING.format(path=file), file=sys.stderr, flush=True)
        estimator = _load_joblib(file)
    else:
        estimator = _load_skops(file)
    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(
            f"{file} holds a {type(estimator).__name__}, which has no predict(); "
            "save a fitted scikit-learn estimator"
        )
    outputs = {method: getattr(estimator, method) for method in ("predict", "predict_proba")
               if callable(getattr(estimator, method, None))}
    n_features = getattr(estimator, "n_features_in_", None)
    return Loaded(estimator, int(n_features) if n_features is not None else None, outputs)


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


def _load_xgboost(file: Path) -> Loaded:
    import xgboost

    try:
        with warnings.catch_warnings():
            # KServe's sample names the file model.bst; xgboost warns that it guesses UBJSON.
            warnings.filterwarnings("ignore", ".*Unknown file format", UserWarning)
            booster = xgboost.Booster(params={"nthread": 1}, model_file=str(file))
    except xgboost.core.XGBoostError as exc:
        raise ModelLoadError(f"{file}: not a readable XGBoost model: {exc}") from exc

    def predict(rows: np.ndarray) -> np.ndarray:
        return booster.predict(xgboost.DMatrix(rows))

    return Loaded(booster, booster.num_features(), {"predict": predict})


def _load_lightgbm(file: Path) -> Loaded:
    import lightgbm

    try:
        booster = lightgbm.Booster(model_file=str(file))
    except lightgbm.basic.LightGBMError as exc:
        raise ModelLoadError(f"{file}: not a readable LightGBM model: {exc}") from exc
    # predict returns a list or a sparse matrix only for options labkit never passes (pred_contrib
    # on sparse input); for rows of a dense array it is a dense array.
    return Loaded(booster, booster.num_feature(), {"predict": booster.predict})  # type: ignore[dict-item]


def _load_onnx(file: Path) -> Loaded:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread per predict: a replica is one process, and requests run concurrently.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(file), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelLoadError(f"{file}: not a readable ONNX model: {type(exc).__name__}: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise ModelLoadError(f"{file}: labkit serves ONNX graphs with one 2-D input "
                             f"[rows, features]; this one has {[i.shape for i in inputs]}")
    source, width = inputs[0], inputs[0].shape[1]
    dtype = np.float64 if source.type == "tensor(double)" else np.float32

    def output(index: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda rows: session.run(None, {source.name: rows.astype(dtype, copy=False)})[index]

    names = [o.name for o in session.get_outputs()]
    outputs = {name: output(i) for i, name in enumerate(names)}
    outputs["predict"] = output(0)
    if len(names) > 1:
        outputs["predict_proba"] = output(1)
    return Loaded(session, width if isinstance(width, int) else None, outputs)


FORMATS: dict[str, FormatRuntime] = {f.name: f for f in (
    FormatRuntime("sklearn", "sklearn", "scikit-learn", (".skops", *PICKLE_SUFFIXES),
                  "kserve-sklearnserver", _load_sklearn),
    FormatRuntime("xgboost", "xgboost", "xgboost-cpu", (".bst", ".json", ".ubj"),
                  "kserve-xgbserver", _load_xgboost),
    FormatRuntime("lightgbm", "lightgbm", "lightgbm", (".bst",), "kserve-lgbserver",
                  _load_lightgbm),
    FormatRuntime("onnx", "onnxruntime", "onnxruntime", (".onnx",), "kserve-tritonserver",
                  _load_onnx),
)}
"""KServe modelFormat name -> how labkit serves it."""


def supported_formats() -> list[str]:
    """modelFormat names this machine can serve (those whose package is installed)."""
    return [name for name, runtime in FORMATS.items() if runtime.installed()]


def format_problem(model_format: str) -> str | None:
    """Why `model_format` cannot be served here, naming the package to install; None if it can."""
    runtime = FORMATS.get(model_format.lower())
    served = ", ".join(supported_formats())
    if runtime is None:
        hint = did_you_mean(model_format, FORMATS)
        return (f"{hint + ' ' if hint else ''}labkit has no runtime for it (served: {served}; on a cluster "
                "PyTorch and TensorFlow models are served by the TorchServe, Triton or TF Serving runtimes)")
    if not runtime.installed():
        return (f"it needs the Python package {runtime.module}, which is not installed: "
                f"pip install {runtime.distribution} (served now: {served})")
    return None


def load_model(name: str, path: Path, model_format: str = "sklearn") -> LoadedModel:
    """Load the single model file at `path` (a file, or a folder holding one model file)."""
    problem = format_problem(model_format)
    if problem is not None:
        raise ModelLoadError(f"modelFormat {model_format!r} is not supported here: {problem}")
    runtime = FORMATS[model_format.lower()]
    file = _model_file(Path(path), runtime)
    started = time.perf_counter()
    loaded = runtime.load(file)
    return LoadedModel(name=name, model_format=runtime.name, path=file,
                       estimator=loaded.estimator, load_seconds=time.perf_counter() - started,
                       n_features=loaded.n_features, outputs=loaded.outputs)


def _model_file(path: Path, runtime: FormatRuntime) -> Path:
    suffixes = runtime.suffixes
    if path.is_file():
        if path.suffix not in suffixes:
            raise ModelLoadError(
                f"{path}: unknown model file type {path.suffix!r} for modelFormat "
                f"{runtime.name}; use one of {', '.join(suffixes)}"
            )
        return path
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model file or folder")
    found = sorted(p for p in path.iterdir() if p.suffix in suffixes and p.is_file())
    if not found:
        raise ModelLoadError(
            f"{path}: no model file in this folder for modelFormat {runtime.name} "
            f"(looked for *{', *'.join(suffixes)})"
        )
    if len(found) > 1:
        raise ModelLoadError(
            f"{path}: more than one model file ({', '.join(p.name for p in found)}); "
            "a model folder must hold exactly one"
        )
    return found[0]
