"""The kserve SDK's ModelServer serving a scikit-learn model, as KServe's sklearnserver does.

KServe's `sklearnserver` image is not published on PyPI, so this is the same few steps on top of
the `kserve` package: joblib.load in load(), the SDK's request/response helpers in predict().
Run with the interpreter of bench/.venv/kserve (kserve 0.21 pins packages labkit cannot share).

    python bench/peers/kserve_sklearn.py --model_name iris --model_dir data/models/iris \
        --http_port 8080 --grpc_port 8081
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SklearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.model = None
        self.ready = False

    def load(self) -> bool:
        (path,) = [p for p in self.model_dir.iterdir() if p.suffix in (".joblib", ".pkl", ".pickle")]
        self.model = joblib.load(path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        rows = get_predict_input(payload)
        return get_predict_response(payload, self.model.predict(rows), self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SklearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start([model])


if __name__ == "__main__":
    main()
