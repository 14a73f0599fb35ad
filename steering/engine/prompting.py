"""Plain prompting, as a baseline for steering and beside it: a preference strength in −1…1
as a system prompt with graded wording, e.g. "Strongly prefer expensive, luxurious options."
at +1. `WordedPrompt` says a request's preferences in words for the dimensions that apply.

`preference_instruction` takes what each end of a dimension means, in a few words, and a
strength; it returns None at 0 (no system prompt at all, the unsteered answer)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection

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


@dataclass
class WordedPrompt:
    """A request's preferences said in words too, for the dimensions that apply to it (gated
    prompt + steering, issue 24). Words carry a topical preference more plainly than steering
    does, but said on every turn they change answers to questions about none of them
    (docs/evaluation.md: cosine 0.80–0.87 to the unsteered answers on everyday questions), so
    a topical dimension is worded only when its condition applies to the prompt. The engine
    reads the conditions on the prompt without words (as they were fitted), then renders
    `prompt_ids` with the words of the dimensions that applied (`DecodeBatch`).

    Plain data, so that it travels with a request to an inference worker. `messages` is the
    chat the request's prompt ids render (fitted to the context with every word, so each
    variant fits); `tokens` is that longest variant's length, which the scheduler counts."""

    messages: list[dict]
    ends: dict[str, tuple[str, str, float]]  # dimension → (positive end, negative end, strength)
    tokens: int = 0

    def __post_init__(self) -> None:
        self.ends = {dim: (str(p), str(n), float(s)) for dim, (p, n, s) in self.ends.items()}

    def instruction(self, applied: Collection[str]) -> str | None:
        """The system prompt with the words of the `applied` dimensions (None: no words)."""
        return preferences_instruction([self.ends[dim] for dim in sorted(self.ends) if dim in applied])

    def prompt_ids(self, loaded, applied: Collection[str]) -> list[int]:
        """The prompt's ids with the `applied` dimensions worded (`loaded`: anything with chat_ids)."""
        return loaded.chat_ids(self.messages, system=self.instruction(applied))
