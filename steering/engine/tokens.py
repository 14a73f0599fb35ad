"""A row's tokens: choosing the next one, and the text they make as they come.

Choosing: the repetition guard over the row's own answer, then greedy or sampled
(temperature, top-k, top-p) with the row's own seeded generator. A row whose logits cannot be
sampled raises `RowFault`, which ends that row only. The text: `Detokenizer`, shared by the
builtin engine and vLLM's."""

from __future__ import annotations

from typing import Sequence

import torch

from .request import GenerationParams

NON_FINITE = (
    "The model's output for this request is not finite (inf or NaN): its steering or its "
    "temperature is too extreme for the model"
)


class RowFault(ValueError):
    """This row cannot go on because of its own input; the other rows of the batch can."""


def guard_repetition(logits: torch.Tensor, generated: Sequence[int], params: GenerationParams) -> torch.Tensor:
    """One row's next-token `logits` [vocabulary] with the repetition guard of `params` applied,
    over the tokens this row has generated so far (a new tensor; `logits` is left as it was).

    - `repetition_penalty` p > 1: each token already generated has its logit divided by p
      when positive, multiplied by p when negative (CTRL's rule, as in transformers), so it
      becomes less likely however confident the model is.
    - `no_repeat_ngram_size` n > 0: a token that would complete an n-gram already generated
      is forbidden, so no n tokens in a row ever repeat.

    Only the answer counts, not the prompt: an answer may quote the question and the chat
    template's tokens, and a penalty on them would push it off topic."""
    penalty, n = params.repetition_penalty, params.no_repeat_ngram_size
    if not generated or (penalty == 1.0 and n == 0):
        return logits
    logits = logits.float().clone()
    if penalty != 1.0:
        seen = torch.tensor(sorted(set(generated)), device=logits.device)
        chosen = logits[seen]
        logits[seen] = torch.where(chosen > 0, chosen / penalty, chosen * penalty)
    if n and len(generated) >= n:
        prefix = tuple(generated[len(generated) - n + 1 :])
        banned = {
            generated[i + n - 1]
            for i in range(len(generated) - n + 1)
            if tuple(generated[i : i + n - 1]) == prefix
        }
        if banned:
            logits[torch.tensor(sorted(banned), device=logits.device)] = float("-inf")
    return logits


class Sampler:
    """One row's choice of its next token, with the row's own parameters and generator (seeded
    from `params.seed`, or at random). `resumed` is how many tokens of the answer were drawn
    elsewhere already (a stream resumed after its worker died): a seeded sampler skips their
    draws, so the answer goes on as if never interrupted."""

    def __init__(self, params: GenerationParams, device: torch.device, *, resumed: int = 0) -> None:
        self.params = params
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator(device=device)
            if params.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(params.seed)
        self._draws_to_skip = resumed if self.generator is not None else 0

    @property
    def greedy(self) -> bool:
        """Whether the next token is the plain argmax (no sampling, no guard)."""
        return self.generator is None and not self.guarded

    @property
    def guarded(self) -> bool:
        return self.params.repetition_penalty != 1.0 or self.params.no_repeat_ngram_size > 0

    def next_token(self, logits: torch.Tensor, generated: Sequence[int]) -> int:
        """The next token from this row's `logits`, given the tokens it has `generated` so
        far: guarded, then greedy or sampled."""
        logits = guard_repetition(logits, generated, self.params)
        return int(logits.argmax()) if self.generator is None else self.sample(logits)

    def sample(self, logits: torch.Tensor) -> int:
        params = self.params
        while self._draws_to_skip:
            # The draws the first generation made for the resumed tokens. How many random
            # numbers a draw takes depends on the logits' shape only, never their values, so
            # drawing on zeros puts the generator where an uninterrupted run would have it.
            self._draws_to_skip -= 1
            torch.multinomial(torch.zeros_like(logits, dtype=torch.float).softmax(-1), 1, generator=self.generator)
        logits = logits.float() / params.temperature
        if params.top_k:
            kth = torch.topk(logits, min(params.top_k, logits.shape[-1])).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            probs = sorted_logits.softmax(-1)
            # Keep the smallest set whose mass reaches top_p (always at least the best token).
            drop = probs.cumsum(-1) - probs >= params.top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        # A tiny temperature can overflow finite logits; multinomial would raise and take
        # every row of the batch down with it.
        if not bool(torch.isfinite(probs).all()):
            raise RowFault(NON_FINITE)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class Detokenizer:
    """Incremental decoding that never splits a multi-byte character or a word-initial space:
    the new text is the difference between decoding a short window with and without the
    newest tokens."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :]
