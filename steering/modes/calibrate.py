"""CALIBRATE, the rule: the user compares answer A, steered at `low`, with answer B, steered at
`high`; each choice narrows [low, high] toward the preferred end, and after `rounds` choices
the calibrated strength is the interval's centre. Pure Python: the API holds no state, the
browser sends the interval back with each choice.

    state = CalibrationState("cost")          # A at −1, B at +1
    state = choose(state, "a")                # [−1, 0]
    state = choose(state, "a")                # [−1, −0.5]
    result(state)                             # −0.75
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from steering.data import catalog

CHOICES = ("a", "slightly_a", "none", "slightly_b", "b")
MAX_ROUNDS = 5

# The question asked while calibrating a shipped dimension is its file's "calibration_question"
# (steering/data/dimensions); other dimensions (uploads, ones made in the admin) get a generic one.
QUESTIONS = {
    name: spec["calibration_question"]
    for name in catalog.dimension_names()
    if (spec := catalog.dimension(name)).get("calibration_question")
}
FALLBACK_QUESTION = "What would you recommend I do this evening?"


def question_for(dimension: str) -> str:
    """The calibration question asked for `dimension` (a generic one for dimensions we don't know)."""
    return QUESTIONS.get(dimension, FALLBACK_QUESTION)


@dataclass(frozen=True)
class CalibrationState:
    """Where one dimension's calibration stands: A is answered at `low`, B at `high`, and
    `round` choices of `rounds` have been made. JSON-able with dataclasses.asdict."""

    dimension: str
    low: float = -1.0
    high: float = 1.0
    round: int = 0
    rounds: int = 3

    def __post_init__(self):
        if not isinstance(self.dimension, str) or not self.dimension:
            raise ValueError("dimension must be a non-empty name")
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in -1…1, not {value}")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        for name, minimum, maximum in (("rounds", 1, MAX_ROUNDS), ("round", 0, self.rounds)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
            if not minimum <= value <= maximum:
                raise ValueError(f"{name} must be in {minimum}…{maximum}, not {value}")


def done(state: CalibrationState) -> bool:
    return state.round >= state.rounds


def choose(state: CalibrationState, choice: str) -> CalibrationState:
    """The state after the user's `choice` between A (at low) and B (at high): the end not
    preferred moves to the midpoint ("a", "b"), a quarter of the way ("slightly_…"), or both
    ends move a quarter inward ("none"). Raises ValueError for an unknown choice or a
    finished calibration."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, not {str(choice)[:40]!r}")
    if done(state):
        raise ValueError(f"calibration of {state.dimension!r} is already done ({state.rounds} rounds)")
    low, high = state.low, state.high
    quarter = (high - low) / 4
    if choice == "a":
        high -= 2 * quarter
    elif choice == "b":
        low += 2 * quarter
    elif choice == "slightly_a":
        high -= quarter
    elif choice == "slightly_b":
        low += quarter
    else:
        low, high = low + quarter, high - quarter
    return replace(state, low=low, high=high, round=state.round + 1)


def result(state: CalibrationState) -> float:
    """The calibrated strength: the interval's centre, in −1…1."""
    return min(1.0, max(-1.0, (state.low + state.high) / 2))
