"""The Knative main-URL pick (`RouteTable.pick`), which the live Service and KServe's canary
split both use: unbiased, seeded, and exact at the edges."""

from __future__ import annotations

import random
from collections import Counter

from scipy.stats import binom

from labkit.serving.models import RouteTable


def test_a_90_10_split_is_binomial():
    table = RouteTable(split=(("model-00001", 90), ("model-00002", 10)))
    rng = random.Random(3)
    counts = Counter(table.pick(rng) for _ in range(5000))
    low, high = binom.interval(0.999, 5000, 0.10)
    assert low <= counts["model-00002"] <= high
    assert counts["model-00001"] + counts["model-00002"] == 5000


def test_same_seed_same_picks():
    table = RouteTable(split=(("a", 50), ("b", 30), ("c", 20)))

    def picks(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [table.pick(rng) for _ in range(200)]

    assert picks(9) == picks(9) != picks(10)
    assert set(picks(9)) == {"a", "b", "c"}


def test_edges_take_everything_or_nothing():
    rng = random.Random(1)
    assert {RouteTable(split=(("only", 100),)).pick(rng) for _ in range(200)} == {"only"}
    # a 0 % entry never gets a request (resolve_traffic drops it, but a 0 in the table is harmless)
    assert {RouteTable(split=(("zero", 0), ("all", 100))).pick(rng) for _ in range(200)} == {"all"}
