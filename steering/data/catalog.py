"""The shipped data: default preference dimensions (paired examples for extraction,
separate reference texts for evaluation) and neutral prompts. Plain JSON, no Django."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


@cache
def dimension(name: str) -> dict:
    """A default dimension: name, negative_label, positive_label, description, pairs
    [{positive, negative}], reference_positive, reference_negative, feedback_positive and
    feedback_negative (LEARN's phrases), prompt_positive and prompt_negative (its ends in words,
    for prompting), and calibration_question (what CALIBRATE asks about it)."""
    path = DATA_DIR / "dimensions" / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"No default dimension {name!r}; there are: {', '.join(dimension_names())}")
    return json.loads(path.read_text())


def dimension_names() -> list[str]:
    return sorted(p.stem for p in (DATA_DIR / "dimensions").glob("*.json"))


def examples(name: str) -> tuple[list[str], list[str]]:
    """(positive texts, negative texts) of a default dimension."""
    pairs = dimension(name)["pairs"]
    return [p["positive"] for p in pairs], [p["negative"] for p in pairs]


@cache
def neutral_prompts() -> list[str]:
    return json.loads((DATA_DIR / "prompts" / "neutral.json").read_text())["prompts"]


def suggestion_prompts() -> list[str]:
    """Open requests for a suggestion, of the held-out split's shape (none of its prompts)."""
    return json.loads((DATA_DIR / "prompts" / "suggestions.json").read_text())["prompts"]


def range_prompts(count: int) -> list[str]:
    """The neutral prompts the functional-range search answers: the last `count` of the
    shipped set, since evaluations take theirs from the start."""
    return neutral_prompts()[-count:]


@cache
def heldout() -> dict:
    """The held-out split: {"prompts": [...], "references": {dimension: {"positive": [...],
    "negative": [...]}}}. Extraction and the range search never read it, so tuning the
    dimensions against it does not grade them on what they were built from."""
    return json.loads((DATA_DIR / "heldout.json").read_text())


def heldout_references(name: str) -> tuple[list[str], list[str]]:
    """(positive, negative) held-out reference texts of a default dimension."""
    refs = heldout()["references"][name]
    return refs["positive"], refs["negative"]


@cache
def condition_prompts() -> tuple[dict[str, list[str]], list[str]]:
    """Conditional steering's fitting prompts: ({topical dimension: prompts about it}, everyday
    prompts about none). Not the held-out split's, nor the ones bench/conditional.py grades with."""
    raw = json.loads((DATA_DIR / "prompts" / "conditions.json").read_text())
    return raw["on_topic"], raw["off_topic"]
