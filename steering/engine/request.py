"""What a caller of the decode loop asks for and what it gets back: `GenerationParams` (with
their bounds), `CHAT_DEFAULTS` (the chat product's sampling policy), `GenerationRequest` (one
prompt, its parameters, steering and cancel flag) and `TokenEvent` (one row's new text, and how
it ended)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import torch

from .conditions import ConditionalSteering
from .prompting import WordedPrompt
from .readout import ReadoutProbe

if TYPE_CHECKING:
    from .vectorfile import SteeringVectors

MAX_NEW_TOKENS_LIMIT = 4096


@dataclass(frozen=True)
class Limit:
    """The bounds of one number a request may set: `low`…`high` (`low` itself excluded when
    `low_open`), an integer when `integer`; `note` says what its special value means."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    note: str = ""

    def problem(self, name: str, value) -> str | None:
        """What is wrong with `value` for the parameter `name`, or None when it fits."""
        kind = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return f"{name} must be {kind}"
        if not math.isfinite(value) or value > self.high or value < self.low or (self.low_open and value == self.low):
            return f"{name} must be {kind} in {self.describe()}, not {value!r}"
        return None

    def describe(self) -> str:
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        low = f"({low:g}, {high:g}]" if self.low_open else f"{low}…{high}" if self.integer else f"{low:g}…{high:g}"
        return low + (f" ({self.note})" if self.note else "")


# Every bound on what a request may ask, in one table: GenerationParams checks it, and the
# REST and websocket schema (steering/chat/native.py) and /v1's parser
# (steering/chat/openai/protocol.py) are built from it, so no door allows what another refuses.
LIMITS = {
    "max_new_tokens": Limit(1, MAX_NEW_TOKENS_LIMIT, integer=True),
    "temperature": Limit(0.0, 2.0, note="0 = greedy"),
    "top_p": Limit(0.0, 1.0, low_open=True),
    "top_k": Limit(0, 1000, integer=True, note="0 = no cut"),
    "seed": Limit(0, 2**63 - 1, integer=True),
    "repetition_penalty": Limit(1.0, 2.0, note="1 = off"),
    "no_repeat_ngram_size": Limit(0, 16, integer=True, note="0 = off"),
}

# A user's strength for one dimension: −1 (the negative end) … +1 (the positive end), mapped
# onto the dimension's functional range by `SteeringVectors.layer_deltas`.
STRENGTH = Limit(-1.0, 1.0)
MAX_DIMENSIONS = 64  # strengths one request or profile may set


def strength_check(value) -> float:
    """`value` as a strength (a finite float in −1…1), or ValueError saying what is wrong."""
    problem = STRENGTH.problem("strength", value)
    if problem:
        raise ValueError(problem)
    return float(value)


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    seed: int | None = None
    # The repetition guard, over the row's own generated tokens (see `guard_repetition`).
    repetition_penalty: float = 1.0  # 1 = off
    no_repeat_ngram_size: int = 0  # 0 = off

    def __post_init__(self) -> None:
        problems = [
            LIMITS[name].problem(name, getattr(self, name))
            for name in LIMITS
            if not (name == "seed" and self.seed is None)
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))


# What a chat answer uses unless the request says otherwise (REST, websocket, chat page). The
# engine's own default stays greedy and unguarded, for evaluations and tests; a chat product
# should not loop, and greedy decoding of a small model does (bench/repetition.py measures it).
CHAT_DEFAULTS = GenerationParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1, no_repeat_ngram_size=4)


def served_greedy(max_new_tokens: int) -> GenerationParams:
    """What evaluations and the functional-range search generate: the chat's answer with its
    repetition guards, as a user reads it, but greedy so that a run repeats. Unguarded greedy
    SmolLM2 tips from "Porto e Portugal!" into "Porto e Portugal e Portugal e …" at the
    gentlest steering, which no user of the chat would read: such answers counted as steering
    making answers degenerate, and pinned ranges to the search's floor."""
    return replace(CHAT_DEFAULTS, temperature=0.0, max_new_tokens=max_new_tokens)


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: GenerationParams = field(default_factory=GenerationParams)
    steering: dict[int, torch.Tensor] = field(default_factory=dict)  # SteeringVectors.layer_deltas
    cancel: threading.Event = field(default_factory=threading.Event)
    # Tokens of the answer generated elsewhere already (a stream resumed after its worker
    # died): prefilled after the prompt, counted against max_new_tokens, never streamed again,
    # and a seeded sampler draws past them, so the answer goes on as if never interrupted.
    generated_ids: list[int] = field(default_factory=list)
    # Topical dimensions, applied only if the prompt is about them (the engine records its
    # decision on this object, before the prefill); `steering` is then the rest.
    conditions: ConditionalSteering | None = None
    # False: the prompt's positions are read unsteered and only the answer is steered (from the
    # last prompt position, whose output is the first answer token, on): the model reads the
    # question as asked, so the answer still answers it (issue 24's "steer only the generated
    # tokens"; SteeringVectors.steer_prompt). A resumed answer's tokens are steered, as they were.
    steer_prompt: bool = True
    # What to read along the way (readout.py; `vectors.readout_probe`): each token's event then
    # carries the row's reading. Unsteered rows may read too: a reading is not steering.
    readout: ReadoutProbe | None = None
    # Preferences also said in words, each once its dimension applies (prompting.WordedPrompt):
    # `prompt_ids` is then the prompt without words, on which the conditions are read, until
    # `apply_words` renders it with them. `words` records which dimensions were worded.
    worded: WordedPrompt | None = None
    words: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("The prompt is empty")

    @property
    def prompt_tokens(self) -> int:
        """The prompt's length once worded (the longest it can become), for admission."""
        return max(len(self.prompt_ids), self.worded.tokens if self.worded is not None else 0)

    def apply_words(self, loaded) -> None:
        """Render the prompt with the words of the worded dimensions that apply: every one that
        is not conditional, and the conditional ones the engine decided apply (`conditions.decision`;
        undecided, as on an engine that does not read conditions, they all apply). Once."""
        if self.worded is None or self.words is not None:
            return
        gated = self.conditions.dimensions if self.conditions is not None else {}
        decided = (self.conditions.decision if self.conditions is not None else None) or {}
        self.words = [dim for dim in sorted(self.worded.ends)
                      if dim not in gated or dim not in decided or decided[dim].applied]
        self.prompt_ids = self.worded.prompt_ids(loaded, self.words)


@dataclass(frozen=True)
class TokenEvent:
    """`text` is the new text of row `index` (may be empty); `finish` is None until the row
    ends, then "stop" (end of turn), "length" (max_new_tokens), "cancelled" or "error" (this
    row's logits stopped being finite; the inference service adds its own), with `error`
    saying what went wrong. `index` is the row's key: its
    position among the requests, unless the caller gave the batch its own keys."""

    index: int
    text: str
    token_id: int | None
    finish: str | None = None
    error: str | None = None
    # With finish "error": "request" when the row's own input caused it (its steering or
    # parameters), "server" otherwise; callers answer the first 4xx, the second 5xx.
    fault: str | None = None
    # The reading of the forward pass that chose `token_id` (one value per dimension of the
    # request's `readout`), when the request asked for one.
    readout: tuple[float, ...] | None = None


def steered_request(
    vectors: SteeringVectors, prompt_ids: Sequence[int], preferences: dict[str, float], *,
    topical: dict[str, float | None] | None = None, params: GenerationParams | None = None,
    generated_ids: Sequence[int] = (), worded: WordedPrompt | None = None,
) -> GenerationRequest:
    """One generation steered by `preferences` as the set `vectors` serves it: its topical
    dimensions (name → threshold, None: the calibrated one) conditional, the sum within its
    joint budget, the prompt steered or not, `worded` dimensions said in words where they apply.
    The site and the evaluations build their requests here, so a benchmark measures what users get."""
    steering, conditions = vectors.conditional_deltas(preferences, topical or {})
    return GenerationRequest(
        prompt_ids=list(prompt_ids), params=params or GenerationParams(), steering=steering,
        conditions=conditions, generated_ids=list(generated_ids), steer_prompt=vectors.steer_prompt,
        worded=worded if worded is not None and worded.ends else None,
    )
