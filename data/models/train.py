"""Train labkit's lab models reproducibly from datasets bundled with scikit-learn.

    python data/models/train.py             # writes every model folder beside this file
    python data/models/train.py digits      # only the digits versions of lab 10

- iris/model.joblib            logistic regression on iris (4 features, 3 classes)
- iris-skops/model.skops       the same model in skops' safe format
- digits-forest/model.joblib   a 100-tree random forest on 8x8 digits (64 features, 10 classes)
- digits-v1, digits-v2, digits-v3 (model.skops): three versions of one digits classifier for
  lab 10's canaries, all logistic regressions on the same 64 pixel features, trained on a
  stratified 70 % split and measured on the 30 % held out:
    v1  the version in production, trained on the older half of the training rows
    v2  a good candidate, trained on every training row (a little better than v1)
    v3  a bad candidate, trained on only 80 rows (5-7 points less accurate)
  digits-holdout.csv is the held-out set (a `label` column, then pixels p0..p63), the traffic
  a lab sends and whose true labels it sends back later as feedback; digits-versions.json
  holds each version's measured held-out accuracy.

Everything is seeded, so running it again gives the same predictions. Each folder holds one
model file, the layout KServe's sklearn server (and labkit's) expects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SEED = 0
HOLDOUT_SHARE = 0.3
# rows of the training split each digits version learns from (None: all of them)
DIGITS_VERSIONS = {"v1": 600, "v2": None, "v3": 80}


def train_iris() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000, random_state=SEED).fit(x, y)


def train_digits_forest() -> RandomForestClassifier:
    x, y = load_digits(return_X_y=True)
    # max_depth keeps the committed file small; accuracy on the training data stays ~1.0.
    return RandomForestClassifier(n_estimators=100, max_depth=12, random_state=SEED).fit(x, y)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_holdout, y_train, y_holdout): stratified, seeded, so every run agrees."""
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=HOLDOUT_SHARE, stratify=y, random_state=SEED)


def train_digits_version(rows: int | None, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    # C=0.01: pixels are 0-16, so a strong penalty generalises best on the full split.
    return LogisticRegression(C=0.01, max_iter=5000, random_state=SEED).fit(x[:rows], y[:rows])


def save(model: object, folder: str, filename: str) -> Path:
    path = HERE / folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".skops"):
        import skops.io

        skops.io.dump(model, path)
    else:
        joblib.dump(model, path, compress=3)
    return path


def save_digits_versions() -> list[Path]:
    x_train, x_holdout, y_train, y_holdout = digits_split()
    paths, measured = [], {}
    for version, rows in DIGITS_VERSIONS.items():
        model = train_digits_version(rows, x_train, y_train)
        paths.append(save(model, f"digits-{version}", "model.skops"))
        measured[version] = {"training_rows": rows or len(x_train),
                             "holdout_accuracy": round(float(model.score(x_holdout, y_holdout)), 4)}
        print(f"digits-{version}: trained on {measured[version]['training_rows']} rows, "
              f"held-out accuracy {measured[version]['holdout_accuracy']:.4f}")
    holdout = HERE / "digits-holdout.csv"
    header = "label," + ",".join(f"p{i}" for i in range(x_holdout.shape[1]))
    np.savetxt(holdout, np.column_stack([y_holdout, x_holdout]).astype(int), fmt="%d",
               delimiter=",", header=header, comments="")
    info = HERE / "digits-versions.json"
    info.write_text(json.dumps({"holdout": holdout.name, "holdout_rows": len(y_holdout),
                                "seed": SEED, "versions": measured}, indent=2) + "\n")
    return [*paths, holdout, info]


def save_iris_and_forest() -> list[Path]:
    iris = train_iris()
    return [save(iris, "iris", "model.joblib"), save(iris, "iris-skops", "model.skops"),
            save(train_digits_forest(), "digits-forest", "model.joblib")]


GROUPS = {"iris": save_iris_and_forest, "digits": save_digits_versions}


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown group(s) {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    for name in argv or list(GROUPS):
        for path in GROUPS[name]():
            print(f"{path.relative_to(HERE)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
