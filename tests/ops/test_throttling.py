"""ops.throttling.Budget: a window per key that opens at its first attempt, counted in the cache."""

import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from ops.throttling import Budget, parse_rate


@pytest.fixture
def rate(settings):
    def set_rate(value):
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"test": value}}
        return Budget("test")

    return set_rate


def test_it_parses_drf_rates():
    assert parse_rate("10/min") == (10, 60) and parse_rate("5/hour") == (5, 3600) and parse_rate("1/s") == (1, 1)
    with pytest.raises(ImproperlyConfigured):
        parse_rate("ten a minute")


def test_it_refuses_past_the_limit_until_the_window_ends(rate):
    budget = rate("2/s")
    assert budget.take("user", 1) is None and budget.take("user", 1) is None
    assert budget.take("user", 1) == 1
    assert budget.take("user", 2) is None  # another key has its own budget
    time.sleep(1.1)
    assert budget.take("user", 1) is None


def test_the_window_opens_at_the_first_attempt_not_on_the_clock(rate):
    budget = rate("1/min")
    assert budget.take("user", 1) is None
    assert 58 <= budget.take("user", 1) <= 60


def test_give_back_undoes_one_take(rate):
    budget = rate("1/min")
    assert budget.take("account", "alice") is None
    budget.give_back("account", "alice")
    assert budget.take("account", "alice") is None
    assert budget.take("account", "alice") and budget.take("account", "alice\x00") is None
    budget.give_back("account", "bob")  # nothing taken: nothing happens
    assert budget.take("account", "bob") is None and budget.take("account", "bob")
