"""What a caller of the decode loop asks for and what it gets back: `GenerationParams` (with
their bounds), `CHAT_DEFAULTS` (the chat product's sampling policy), `GenerationRequest` (one
prompt, its parameters, steering and cancel flag) and `TokenEvent` (one row's new text, and how
it ended)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch

MAX_NEW_TOKENS_LIMIT = 4096


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
        problems = []
        if not (isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT):
            problems.append(f"max_new_tokens must be an integer in 1…{MAX_NEW_TOKENS_LIMIT}")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 10):
            problems.append("temperature must be in 0…10 (0 = greedy)")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            problems.append("top_p must be in (0, 1]")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            problems.append("top_k must be an integer ≥ 0")
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            problems.append("seed must be a non-negative integer")
        if not (math.isfinite(self.repetition_penalty) and 1 <= self.repetition_penalty <= 2):
            problems.append("repetition_penalty must be in 1…2 (1 = off)")
        if not (isinstance(self.no_repeat_ngram_size, int) and 0 <= self.no_repeat_ngram_size <= 16):
            problems.append("no_repeat_ngram_size must be an integer in 0…16 (0 = off)")
        if problems:
            raise ValueError("; ".join(problems))


# What a chat answer uses unless the request says otherwise (REST, websocket, chat page). The
# engine's own default stays greedy and unguarded, for evaluations and tests; a chat product
# should not loop, and greedy decoding of a small model does (bench/repetition.py measures it).
CHAT_DEFAULTS = GenerationParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1, no_repeat_ngram_size=4)


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

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("The prompt is empty")


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
