"""Batched, streaming, per-row-steered generation over the KV cache.

`DecodeBatch` is our own decode loop: rows are left-padded with explicit position ids, each
row samples with its own parameters and seed, carries its own steering, and streams its own
text; a row that finishes (end of turn, length, cancellation) leaves the batch at once, its
cache rows dropped, so it costs nothing from the next step on. `stream_batch` runs one to
completion; the inference service drives `DecodeBatch.step` itself, and lets newcomers join a
running batch with `DecodeBatch.merge` once they have had their own prefill step. A batch made
with `prefill_chunk` prefills its prompts a few columns per `step`, so the service can run the
running batch's decode steps in between and no stream stalls for a whole prompt.
"""

from __future__ import annotations

import inspect
import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from .condition_reading import decide
from .conditions import ConditionalSteering, add_deltas
from .extraction import pad_left
from .hooks import RowSteering, SteeringHooks
from .kvcache import GrowingLayer, grow_cache
from .loading import LoadedModel

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
    # Topical dimensions, applied only if the prompt is about them (the engine records its
    # decision on this object, before the prefill); `steering` is then the rest.
    conditions: ConditionalSteering | None = None

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


NON_FINITE = (
    "The model's output for this request is not finite (inf or NaN): its steering or its "
    "temperature is too extreme for the model"
)


class RowFault(ValueError):
    """This row cannot go on because of its own input; the other rows of the batch can."""


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


class _Row:
    def __init__(self, index: int, request: GenerationRequest, tokenizer, device: torch.device) -> None:
        self.index = index
        self.request = request
        self.params = request.params
        self.detok = Detokenizer(tokenizer)
        self.generator = None
        if self.params.temperature > 0:
            self.generator = torch.Generator(device=device)
            if self.params.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.params.seed)
        for token in request.generated_ids:
            self.detok.push(token)  # its text was sent already: only the decoder's state matters
        self._draws_to_skip = len(request.generated_ids) if self.generator is not None else 0

    @property
    def guarded(self) -> bool:
        return self.params.repetition_penalty != 1.0 or self.params.no_repeat_ngram_size > 0

    def next_token(self, logits: torch.Tensor) -> int:
        """This row's next token from its logits: guarded, then greedy or sampled."""
        logits = guard_repetition(logits, self.detok.ids, self.params)
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


def accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class DecodeBatch:
    """A batch of requests decoded together. `step()` runs one forward pass (the prefill on
    the first call) and returns the token events it produced; `done` is true when no row is
    left. `keys` name the rows in the events (default: 0, 1, …); they must be unique, also
    across batches that will be merged.

    `prefill_chunk` (tokens, None: all at once) splits the prefill into forward passes of at
    most that many tokens over all rows (at least one column each); every `step` but the last
    of them returns no events (`prefilling` stays true until then).

    The KV cache's full-attention layers become `GrowingLayer`s after the first pass, so a
    decode step writes its keys and values in place instead of copying the cache
    (`reserve_cache = False` keeps transformers' layers, for benches to compare)."""

    reserve_cache = True

    def __init__(
        self,
        loaded: LoadedModel,
        hooks: SteeringHooks | None,
        requests: Sequence[GenerationRequest],
        *,
        keys: Sequence[int] | None = None,
        prefill_chunk: int | None = None,
    ):
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1 token")
        if not requests:
            raise ValueError("No requests to generate")
        keys = list(range(len(requests))) if keys is None else list(keys)
        if len(keys) != len(requests) or len(set(keys)) != len(keys):
            raise ValueError("Each request needs its own key")
        self.loaded = loaded
        self.hooks = hooks
        device = loaded.device
        self.rows = [_Row(key, r, loaded.tokenizer, device) for key, r in zip(keys, requests)]
        steered = [r.steering for r in requests]
        conditional = any(r.conditions is not None for r in requests)
        if (any(steered) or conditional) and hooks is None:
            raise ValueError("Steered requests need SteeringHooks")
        if conditional:
            steered = [add_deltas(s, applied) for s, applied in zip(steered, decide(loaded, hooks, requests))]
        self.steering = RowSteering.from_rows(steered, dtype=loaded.dtype, device=device)
        self.input_ids, self.mask, positions = pad_left(
            [r.prompt_ids + r.generated_ids for r in requests], loaded.pad_id, device
        )
        self.next_position = positions[:, -1] + 1
        self.cache = None
        self._extra = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}
        self._positions = positions
        width = self.input_ids.shape[1]
        # Columns per prefill pass; the last pass takes the remainder and samples.
        self._chunk_columns = width if prefill_chunk is None else max(1, prefill_chunk // len(requests))
        self._prefilled: int | None = 0  # prompt columns already in the cache; None once all are
        self.steps = 0

    @property
    def done(self) -> bool:
        return not self.rows

    @property
    def keys(self) -> list[int]:
        return [row.index for row in self.rows]

    @property
    def prefilling(self) -> bool:
        """Whether some prompt columns are still to go through the model (chunked prefill)."""
        return self._prefilled is not None

    @property
    def joinable(self) -> bool:
        """Whether this batch can take part in a `merge` now: past its prefill, with rows
        left, on a cache whose layout `merge` knows."""
        return not self.done and not self.prefilling and _cache_is_joinable(self.cache)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        context = self.hooks.active(self.steering) if self.hooks is not None else nullcontext()
        with context:
            out = self.loaded.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                **self._extra,
            )
        self.cache = out.past_key_values
        if self.reserve_cache:
            grow_cache(self.cache)
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        if self.done:
            return []
        if not self.prefilling:
            logits = self._forward(self.input_ids, self.mask, self._positions)
        else:
            start, width = self._prefilled, self.input_ids.shape[1]
            stop = min(width, start + self._chunk_columns)
            logits = self._forward(self.input_ids[:, start:stop], self.mask[:, :stop], self._positions[:, start:stop])
            if stop < width:
                self._prefilled = stop
                return self._cancelled_while_prefilling()
            self._prefilled = None
        self.steps += 1
        greedy = logits.argmax(-1).tolist()
        # Rows never mix inside a forward pass, so a row's non-finite logits (absurd steering)
        # are its own: it ends here, alone, and the others decode on unchanged.
        finite = torch.isfinite(logits).all(-1).tolist()
        stop_ids = self.loaded.stop_ids
        events, keep, next_tokens = [], [], []
        for position, row in enumerate(self.rows):
            if row.request.cancel.is_set():
                events.append(TokenEvent(row.index, row.detok.flush(), None, "cancelled"))
                continue
            try:
                if not finite[position]:
                    raise RowFault(NON_FINITE)
                if row.generator is None and not row.guarded:
                    token = greedy[position]  # the batch's argmax, computed once
                else:
                    token = row.next_token(logits[position])
            except RowFault as fault:
                events.append(TokenEvent(row.index, row.detok.flush(), None, "error", error=str(fault), fault="request"))
                continue
            if token in stop_ids:
                events.append(TokenEvent(row.index, row.detok.flush(), token, "stop"))
                continue
            text = row.detok.push(token)
            if len(row.detok.ids) >= row.params.max_new_tokens:
                events.append(TokenEvent(row.index, text + row.detok.flush(), token, "length"))
                continue
            events.append(TokenEvent(row.index, text, token))
            keep.append(position)
            next_tokens.append(token)
        self._advance(keep, next_tokens)
        return events

    def _cancelled_while_prefilling(self) -> list[TokenEvent]:
        # A row cancelled between two prefill chunks leaves now rather than after the prompt.
        gone = [position for position, row in enumerate(self.rows) if row.request.cancel.is_set()]
        if not gone:
            return []
        events = [TokenEvent(self.rows[p].index, "", None, "cancelled") for p in gone]
        keep = [p for p in range(len(self.rows)) if p not in gone]
        self.rows = [self.rows[p] for p in keep]
        if not keep:
            self.cache = None
            return events
        index = torch.tensor(keep, device=self.loaded.device)
        self.cache.batch_select_indices(index)
        self.input_ids, self.mask, self._positions = self.input_ids[index], self.mask[index], self._positions[index]
        self.next_position = self.next_position[index]
        if self.steering is not None:
            self.steering = self.steering.select(keep)
        return events

    def cancel_all(self) -> None:
        for row in self.rows:
            row.request.cancel.set()

    def _advance(self, keep: list[int], next_tokens: list[int]) -> None:
        device = self.loaded.device
        if len(keep) < len(self.rows):
            self.rows = [self.rows[i] for i in keep]
            if not keep:
                self.cache = None  # frees the KV cache at once
                return
            index = torch.tensor(keep, device=device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.next_position = self.next_position[index]
            if self.steering is not None:
                self.steering = self.steering.select(keep)
            self._drop_shared_padding()
        self.input_ids = torch.tensor(next_tokens, device=device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(keep), 1)], dim=1)
        self._positions = self.next_position[:, None]
        self.next_position = self.next_position + 1

    def _drop_shared_padding(self) -> None:
        # Once the longest row has left, the leading cache columns may be padding for every
        # row still here; without this, a batch that newcomers keep joining would only grow.
        if not _cache_is_joinable(self.cache):
            return
        unused = int(self.mask.any(0).long().argmax())  # the first column some row attends to
        if unused == 0:
            return
        for layer in self.cache.layers:
            _trim_layer(layer, unused)
        self.mask = self.mask[:, unused:]

    def merge(self, other: DecodeBatch) -> None:
        """Take the rows of `other` into this batch: from the next `step` on they decode
        together. Both batches must have taken their prefill step and have rows left
        (`joinable`), with the same model; `other` is left empty. The shorter cache is
        left-padded with masked zeros; positions are explicit per row, so every row computes
        what it would alone (the same greedy tokens). On an error nothing has changed.

        Caches other than transformers' `DynamicCache` of full or sliding-window layers (static,
        quantised, offloaded, recurrent or hybrid caches) cannot merge: `joinable` is false and
        the caller waits for this batch to end before it starts the next."""
        if not (self.joinable and other.joinable):
            raise ValueError("Only two batches past their prefill, with rows left and a dynamic cache, can merge")
        if other.loaded is not self.loaded:
            raise ValueError("Batches of different models cannot merge")
        if self.hooks is not None and other.hooks is not None and self.hooks is not other.hooks:
            raise ValueError("Batches steered through different hooks cannot merge")
        shared = set(self.keys) & set(other.keys)
        if shared:
            raise ValueError(f"Row keys {sorted(shared)} are in both batches")
        if len(self.cache.layers) != len(other.cache.layers):
            raise ValueError("The two caches have different numbers of layers")
        layers = [_joined_layer(mine, theirs) for mine, theirs in zip(self.cache.layers, other.cache.layers)]
        width = max(self.mask.shape[1], other.mask.shape[1])
        mask = torch.cat([_pad_columns(self.mask, width), _pad_columns(other.mask, width)])
        steering = _joined_steering(self.steering, len(self.rows), other.steering, len(other.rows))
        # Everything that can fail is done; now change state.
        for layer, (keys, values, seen) in zip(self.cache.layers, layers):
            layer.keys, layer.values = keys, values
            if seen is not None:
                layer.cumulative_length = seen
        self.mask = mask
        self.steering = steering
        self.hooks = self.hooks or other.hooks
        self.rows = self.rows + other.rows
        self.input_ids = torch.cat([self.input_ids, other.input_ids])
        self._positions = torch.cat([self._positions, other._positions])
        self.next_position = torch.cat([self.next_position, other.next_position])
        other.rows, other.cache = [], None


_JOINABLE_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer, GrowingLayer)


def _cache_is_joinable(cache) -> bool:
    return (
        type(cache) is DynamicCache
        and not cache.offloading
        and bool(cache.layers)
        and all(type(layer) in _JOINABLE_LAYERS and layer.is_initialized for layer in cache.layers)
    )


def _pad_columns(tensor: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    """`tensor` left-padded with zeros along `dim` to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _joined_layer(mine, theirs) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Keys, values (and for a sliding-window layer the number of tokens seen) of two cache
    layers stacked along the batch. A sliding layer keeps the most recent tokens only, so its
    stored length can be shorter than what it has seen; both sides are right-aligned either
    way, which keeps each row's distances between tokens as they were."""
    if type(mine) is not type(theirs):
        raise ValueError(f"Cannot merge a {type(mine).__name__} with a {type(theirs).__name__}")
    length = max(mine.keys.shape[-2], theirs.keys.shape[-2])
    keys = torch.cat([_pad_columns(mine.keys, length, -2), _pad_columns(theirs.keys, length, -2)])
    values = torch.cat([_pad_columns(mine.values, length, -2), _pad_columns(theirs.values, length, -2)])
    seen = max(mine.cumulative_length, theirs.cumulative_length) if isinstance(mine, DynamicSlidingWindowLayer) else None
    return keys, values, seen


def _trim_layer(layer, columns: int) -> None:
    """Drop the oldest `columns` tokens of a cache layer; a sliding-window layer may hold
    fewer than it has seen, and drops only those of the `columns` it still holds."""
    if isinstance(layer, DynamicSlidingWindowLayer):
        already_gone = layer.cumulative_length - layer.keys.shape[-2]
        drop = max(0, columns - already_gone)
        layer.cumulative_length -= columns
    else:
        drop = columns
    layer.keys = layer.keys[:, :, drop:, :]
    layer.values = layer.values[:, :, drop:, :]


def _joined_steering(
    mine: RowSteering | None, my_rows: int, theirs: RowSteering | None, their_rows: int
) -> RowSteering | None:
    """The steering of two batches stacked: a row gets zeros on the layers its side does not
    steer (adding zeros changes nothing), and None stays None when neither side is steered."""
    if mine is None and theirs is None:
        return None
    sample = next(iter((mine or theirs).deltas.values()))
    layers = sorted({*(mine.deltas if mine else ()), *(theirs.deltas if theirs else ())})

    def part(steering: RowSteering | None, rows: int, layer: int) -> torch.Tensor:
        if steering is not None and layer in steering.deltas:
            return steering.deltas[layer]
        return sample.new_zeros(rows, sample.shape[-1])

    return RowSteering({layer: torch.cat([part(mine, my_rows, layer), part(theirs, their_rows, layer)]) for layer in layers})


def stream_batch(
    loaded: LoadedModel, hooks: SteeringHooks | None, requests: Sequence[GenerationRequest]
) -> Iterator[TokenEvent]:
    """Generate all requests together, yielding each row's text as it comes. Closing the
    iterator early (a consumer that stops listening) ends generation between two tokens."""
    batch = DecodeBatch(loaded, hooks, requests)
    try:
        while not batch.done:
            yield from batch.step()
    finally:
        batch.cancel_all()
        batch.cache = None
