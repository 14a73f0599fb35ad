"""The CALIBRATE rule (steering/calibrate.py): pure, no database."""

import json
from dataclasses import asdict

import pytest

from steering.modes.calibrate import CHOICES, FALLBACK_QUESTION, QUESTIONS, CalibrationState, choose, done, question_for, result


def test_it_starts_at_the_full_range():
    state = CalibrationState("cost")
    assert (state.low, state.high, state.round, state.rounds) == (-1.0, 1.0, 0, 3)
    assert result(state) == 0.0 and not done(state)


@pytest.mark.parametrize(
    "choice, low, high",
    [
        ("a", -1.0, 0.0),
        ("slightly_a", -1.0, 0.5),
        ("none", -0.5, 0.5),
        ("slightly_b", -0.5, 1.0),
        ("b", 0.0, 1.0),
    ],
)
def test_it_moves_the_ends_for_each_choice(choice, low, high):
    state = choose(CalibrationState("cost"), choice)
    assert (state.low, state.high, state.round) == (low, high, 1)


def test_it_follows_the_midpoint_rule_a_a():
    state = choose(CalibrationState("cost", rounds=2), "a")
    assert (state.low, state.high) == (-1.0, 0.0)
    state = choose(state, "a")
    assert (state.low, state.high) == (-1.0, -0.5)
    assert done(state) and result(state) == -0.75


def test_it_follows_the_midpoint_rule_b_b_b():
    state = CalibrationState("formality")
    for _ in range(3):
        state = choose(state, "b")
    assert (state.low, state.high, state.round) == (0.75, 1.0, 3)
    assert done(state) and result(state) == 0.875


def test_it_narrows_a_sub_interval_relative_to_its_own_width():
    state = CalibrationState("cost", low=-1.0, high=0.0, round=1)
    assert (choose(state, "slightly_b").low, choose(state, "slightly_b").high) == (-0.75, 0.0)
    assert (choose(state, "none").low, choose(state, "none").high) == (-0.75, -0.25)


def test_no_preference_keeps_the_centre():
    state = choose(CalibrationState("cost", low=-0.5, high=1.0), "none")
    assert result(state) == 0.25 and state.high - state.low == 0.75


def test_the_result_stays_within_range():
    assert result(CalibrationState("cost", low=0.999, high=1.0)) <= 1.0
    assert result(CalibrationState("cost", low=-1.0, high=-0.999)) >= -1.0
    state = CalibrationState("cost", rounds=5)
    for _ in range(5):
        state = choose(state, "b")
    assert 0.95 < result(state) <= 1.0


def test_it_is_done_after_its_rounds_and_refuses_more():
    state = choose(CalibrationState("cost", rounds=1), "b")
    assert done(state)
    with pytest.raises(ValueError, match="already done"):
        choose(state, "a")


def test_it_refuses_an_unknown_choice():
    with pytest.raises(ValueError, match="choice must be one of"):
        choose(CalibrationState("cost"), "c")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"low": 0.5, "high": 0.5}, "less than high"),
        ({"low": 0.5, "high": -0.5}, "less than high"),
        ({"low": -1.5}, "in -1…1"),
        ({"high": 2}, "in -1…1"),
        ({"low": float("nan")}, "finite"),
        ({"high": True}, "finite"),
        ({"rounds": 0}, "rounds must be in 1…5"),
        ({"rounds": 6}, "rounds must be in 1…5"),
        ({"round": -1}, "round must be in 0…3"),
        ({"round": 4}, "round must be in 0…3"),
        ({"round": 1.0}, "round must be an integer"),
        ({"dimension": ""}, "dimension"),
    ],
)
def test_it_refuses_a_bad_state(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationState(**{"dimension": "cost", **kwargs})


def test_a_state_is_frozen_and_json_able():
    state = CalibrationState("cost", low=-1.0, high=0.0, round=1, rounds=2)
    with pytest.raises(AttributeError):
        state.low = 0.0  # type: ignore[misc]
    data = json.loads(json.dumps(asdict(state)))
    assert CalibrationState(**data) == state


def test_every_default_dimension_has_a_question():
    assert set(QUESTIONS) == {"formality", "cost", "ambiance", "age", "time", "culture"}
    assert question_for("cost") == QUESTIONS["cost"]
    assert question_for("sarcasm") == FALLBACK_QUESTION
    assert CHOICES == ("a", "slightly_a", "none", "slightly_b", "b")
