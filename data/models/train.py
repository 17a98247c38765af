"""Train labkit's lab models reproducibly from datasets bundled with scikit-learn.

    python data/models/train.py          # writes the model folders beside this file

- iris/model.joblib            logistic regression on iris (4 features, 3 classes)
- iris-skops/model.skops       the same model in skops' safe format
- digits-forest/model.joblib   a 100-tree random forest on 8x8 digits (64 features, 10 classes)

Everything is seeded, so running it again gives the same predictions. Each folder holds one
model file, the layout KServe's sklearn server (and labkit's) expects.
"""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.datasets import load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
SEED = 0


def train_iris() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000, random_state=SEED).fit(x, y)


def train_digits_forest() -> RandomForestClassifier:
    x, y = load_digits(return_X_y=True)
    # max_depth keeps the committed file small; accuracy on the training data stays ~1.0.
    return RandomForestClassifier(n_estimators=100, max_depth=12, random_state=SEED).fit(x, y)


def save(model: object, folder: str, filename: str) -> Path:
    path = HERE / folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".skops"):
        import skops.io

        skops.io.dump(model, path)
    else:
        joblib.dump(model, path, compress=3)
    return path


def main() -> None:
    iris = train_iris()
    for path in (
        save(iris, "iris", "model.joblib"),
        save(iris, "iris-skops", "model.skops"),
        save(train_digits_forest(), "digits-forest", "model.joblib"),
    ):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
