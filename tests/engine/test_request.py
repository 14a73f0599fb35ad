"""steering.engine.request: the one table of limits every door is built from."""

import math

import pytest

from steering.engine import LIMITS, GenerationParams, strength_check


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_it_accepts_each_parameter_at_its_bounds_and_refuses_it_past_them(name):
    limit = LIMITS[name]
    step = 1 if limit.integer else 0.01
    GenerationParams(**{name: int(limit.high) if limit.integer else limit.high})
    with pytest.raises(ValueError, match=name):
        GenerationParams(**{name: (int(limit.high) if limit.integer else limit.high) + step})
    if limit.low_open:
        with pytest.raises(ValueError, match=name):
            GenerationParams(**{name: limit.low})
    else:
        GenerationParams(**{name: int(limit.low) if limit.integer else limit.low})
        with pytest.raises(ValueError, match=name):
            GenerationParams(**{name: (int(limit.low) if limit.integer else limit.low) - step})


def test_the_engine_allows_no_hotter_temperature_than_the_apis():
    assert LIMITS["temperature"].high == 2.0
    with pytest.raises(ValueError, match="temperature must be a number in 0…2"):
        GenerationParams(temperature=2.5)


def test_it_names_every_bad_parameter_at_once():
    with pytest.raises(ValueError) as refused:
        GenerationParams(temperature=math.nan, top_k=1.5, max_new_tokens=0)
    assert all(name in str(refused.value) for name in ("temperature", "top_k", "max_new_tokens"))


@pytest.mark.parametrize("value", [1.01, -1.5, math.nan, math.inf, True, "1", None])
def test_a_strength_outside_minus_one_to_one_or_not_a_number_is_refused(value):
    with pytest.raises(ValueError, match="strength must be a number"):
        strength_check(value)


def test_a_strength_within_bounds_comes_back_as_a_float():
    assert [strength_check(v) for v in (-1, 0, 0.25, 1)] == [-1.0, 0.0, 0.25, 1.0]
