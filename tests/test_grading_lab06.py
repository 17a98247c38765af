"""Lab 06 checks: right answers pass with one line, wrong ones fail with a HINT."""

from __future__ import annotations

import pytest

from labkit.grading.checks import NotAnsweredError
from labkit.grading.lab06 import check_filter, check_retry_policy

GOOD_FILTER = [{"prefix": {"type": "com.shop.order."}}, {"exact": {"region": "eu"}},
               {"not": {"suffix": {"source": "/test"}}}]


def test_right_filter_passes(capsys):
    check_filter(GOOD_FILTER)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("filters, fragment", [
    (GOOD_FILTER[:2], "also lets through e5"),
    ([{"exact": {"type": "com.shop.order.created"}}, {"exact": {"region": "eu"}}], "misses e3, e7"),
    ([{"prefix": {"type": "com.shop."}, "exact": {"region": "eu"}}], "multiple dialects"),
])
def test_wrong_filters_fail_with_a_hint(filters, fragment):
    with pytest.raises(AssertionError, match=fragment) as info:
        check_filter(filters)
    assert "HINT:" in str(info.value)


def test_placeholder_is_not_an_answer():
    with pytest.raises(NotAnsweredError):
        check_filter(None)


def test_retry_policy_check():
    check_retry_policy({"retry": 6, "backoffPolicy": "linear", "backoffDelay": "PT1S"})
    with pytest.raises(AssertionError, match="dead-letter sink"):
        check_retry_policy({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S"})
    with pytest.raises(AssertionError, match="p99 latency"):
        check_retry_policy({"retry": 6, "backoffPolicy": "exponential", "backoffDelay": "PT1S"})
    with pytest.raises(AssertionError, match="Knative would refuse"):
        check_retry_policy({"retry": 3, "backoffDelay": "1s"})
