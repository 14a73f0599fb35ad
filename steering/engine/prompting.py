"""Plain prompting as a baseline for steering: a preference strength in −1…1 as a system
prompt with graded wording, e.g. "Strongly prefer expensive, luxurious options." at +1.

`preference_instruction` takes what each end of a dimension means, in a few words, and a
strength; it returns None at 0 (no system prompt at all, the unsteered answer)."""

from __future__ import annotations

import math

# |strength| at or above each bound → the wording; below the last one, no instruction.
DEGREES = ((0.75, "strongly prefers"), (0.25, "somewhat prefers"))


def preference_instruction(positive: str, negative: str, strength: float) -> str | None:
    """The system prompt for `strength` between the `negative` (−1) and `positive` (+1) ends."""
    if not (math.isfinite(strength) and -1 <= strength <= 1):
        raise ValueError("strength must be in -1…1")
    end = positive if strength > 0 else negative
    for bound, wording in DEGREES:
        if abs(strength) >= bound:
            return f"Answer for someone who {wording} {end}."
    return None


def preferences_instruction(ends: list[tuple[str, str, float]]) -> str | None:
    """One system prompt for several dimensions: (positive, negative, strength) each; None
    when no strength is strong enough to be worded."""
    parts = [text for positive, negative, strength in ends if (text := preference_instruction(positive, negative, strength))]
    return " ".join(parts) or None
