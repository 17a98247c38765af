"""labkit.params.check_range: the one argument check, scikit-learn style."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labkit.params import ParameterError, check_range, check_seed


def test_in_range_values_come_back_as_the_kind_asked_for() -> None:
    assert check_range("rate", 0.5, 0, 1) == 0.5
    assert check_range("rate", 1, 0, 1) == 1.0 and isinstance(check_range("rate", 1, 0, 1), float)
    assert check_range("hosts", np.int64(3), 1, 1000, integer=True) == 3
    assert type(check_range("hosts", np.int64(3), 1, 1000, integer=True)) is int
    assert check_range("keep_alive", math.inf, 0) == math.inf  # [0, inf]: infinity is allowed


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("failure_rate", 1.5, 0, 1), {}, r"failure_rate must be a number in the range \[0, 1\], got 1.5"),
    (("duration", 0, 0), {"closed": "neither"}, r"duration must be a number in the range \(0, inf\), got 0"),
    (("duration", math.inf, 0), {"closed": "left"}, r"duration must be a number in the range \[0, inf\), got inf"),
    (("share", math.nan, 0, 1), {}, r"share must be a number in the range \[0, 1\], got nan"),
    (("window", 6, 6, 3600), {"closed": "right"}, r"window must be a number in the range \(6, 3600\], got 6"),
    (("hosts", 2.5, 1), {"integer": True}, r"hosts must be an integer in the range \[1, inf\), got 2.5"),
    (("hosts", 0, 1), {"integer": True}, r"hosts must be an integer in the range \[1, inf\), got 0"),
    (("hosts", True, 1), {"integer": True}, r"hosts must be an integer in the range \[1, inf\), got True"),
    (("rate", "fast", 0), {}, r"rate must be a number in the range \[0, inf\], got 'fast'"),
])
def test_out_of_range_names_parameter_value_and_interval(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        check_range(*args, **kwargs)


def test_the_error_is_both_a_value_error_and_a_type_error() -> None:
    with pytest.raises(ValueError):
        check_range("x", -1, 0)
    with pytest.raises(TypeError):
        check_range("x", None, 0)


def test_seed_is_a_non_negative_integer() -> None:
    assert check_seed(0) == 0 and check_seed(np.uint32(7)) == 7
    for bad in (-1, 1.0, None, "1", False):
        with pytest.raises(ParameterError, match=r"seed must be an integer in the range \[0, inf\)"):
            check_seed(bad)
