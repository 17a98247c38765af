"""Split accuracy of the three ways labkit makes a 90/10 split (part of bench_canary.py).

Each way runs the picking code the live data path runs, on the object that way builds from its
own YAML, once per request:

* Istio: a VirtualService with weights 90/10 (as Flagger writes for `<name>-primary` and
  `<name>-canary`), routed by `VirtualService.decide` (`labkit.mesh.routing.pick_destination`,
  Envoy's weighted clusters: one uniform integer per request).
* Knative: a Service's traffic block 90/10 resolved by `resolve_traffic` and picked by
  `RouteTable.pick`, what the live Service's main URL calls per request.
* KServe: `canaryTrafficPercent: 10` turned into the predictor's Knative traffic block by
  `labkit.inference.rollout.traffic_block` (what the InferenceService controller applies),
  then resolved and picked as above.

The observed canary share over `n` requests must lie inside the central 99.9 % interval of
Binomial(n, 0.10): a biased or sticky pick would fall outside it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from scipy.stats import binom

from labkit.inference.rollout import Rollout, traffic_block
from labkit.mesh.routing import Forward, Request, VirtualService
from labkit.serving.models import TrafficTarget, resolve_traffic

CANARY_PERCENT = 10
CONFIDENCE = 0.999


def istio_picker(seed: int) -> Callable[[], str]:
    vs = VirtualService.from_spec({"hosts": ["model"], "http": [{"route": [
        {"destination": {"host": "model-primary"}, "weight": 100 - CANARY_PERCENT},
        {"destination": {"host": "model-canary"}, "weight": CANARY_PERCENT},
    ]}]})
    rng = random.Random(seed)
    request = Request("POST", "/v1/models/model:predict", authority="model")

    def pick() -> str:
        decision = vs.decide(request, rng)
        assert isinstance(decision, Forward)
        return "canary" if decision.destination.host.startswith("model-canary") else "primary"
    return pick


def _knative_pick(traffic: list[TrafficTarget], latest: str, seed: int,
                  canary_revision: str) -> Callable[[], str]:
    table = resolve_traffic(traffic, latest, {"model-00001", "model-00002"}, lambda tag: tag)
    assert not table.problems, table.problems
    rng = random.Random(seed)
    return lambda: "canary" if table.pick(rng) == canary_revision else "primary"


def knative_picker(seed: int) -> Callable[[], str]:
    traffic = [TrafficTarget(revision_name="model-00001", percent=100 - CANARY_PERCENT),
               TrafficTarget(latest_revision=True, percent=CANARY_PERCENT)]
    return _knative_pick(traffic, "model-00002", seed, "model-00002")


def kserve_picker(seed: int) -> Callable[[], str]:
    entries, _ = traffic_block(CANARY_PERCENT, Rollout(latest="model-00001"), new_revision=True,
                               latest_created="model-00001", tags=False)
    traffic = [TrafficTarget(percent=e.percent, revision_name=e.revision_name,
                             latest_revision=e.latest_revision) for e in entries]
    return _knative_pick(traffic, "model-00002", seed, "model-00002")


WAYS: dict[str, Callable[[int], Callable[[], str]]] = {
    "Istio VirtualService weights": istio_picker,
    "Knative traffic percent": knative_picker,
    "KServe canaryTrafficPercent": kserve_picker,
}


def split_rows(n: int, seed: int) -> list[dict[str, object]]:
    """Per way: canary requests of `n`, the observed share and the binomial interval."""
    low, high = binom.interval(CONFIDENCE, n, CANARY_PERCENT / 100)
    rows = []
    for way, make in WAYS.items():
        pick = make(seed)
        counts = Counter(pick() for _ in range(n))
        canary = counts["canary"]
        rows.append({"way": way, "requests": n, "canary": canary, "share": canary / n,
                     "interval": [int(low), int(high)], "inside": bool(low <= canary <= high)})
    return rows
