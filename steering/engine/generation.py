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
from contextlib import nullcontext
from typing import Iterator, Sequence

import torch

from .cache_merge import cache_is_joinable, joined_layer, pad_columns, trim_layer
from .condition_reading import decide
from .hooks import RowSteering, SteeringHooks
from .kvcache import grow_cache
from .loading import LoadedModel, pad_left
from .readout import BatchReadout
from .request import GenerationRequest, TokenEvent
from .stepmask import StepMask, decode_mask_applies
from .tokens import NON_FINITE, Detokenizer, RowFault, Sampler

class _Row:
    def __init__(self, index: int, request: GenerationRequest, tokenizer, device: torch.device) -> None:
        self.index = index
        self.request = request
        self.params = request.params
        self.detok = Detokenizer(tokenizer)
        for token in request.generated_ids:
            self.detok.push(token)  # its text was sent already: only the decoder's state matters
        self.sampler = Sampler(request.params, device, resumed=len(request.generated_ids))


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
        steered = [r.steering for r in requests]
        conditional = any(r.conditions is not None for r in requests)
        if (any(steered) or conditional) and hooks is None:
            raise ValueError("Steered requests need SteeringHooks")
        if conditional:
            steered = [
                s if r.conditions is None else r.conditions.total(s, applied)
                for s, r, applied in zip(steered, requests, decide(loaded, hooks, requests))
            ]
        for request in requests:  # after the decision, which reads each prompt without words
            request.apply_words(loaded)
        self.rows = [_Row(key, r, loaded.tokenizer, device) for key, r in zip(keys, requests)]
        self.steering = RowSteering.from_rows(steered, dtype=loaded.dtype, device=device)
        self.readout: BatchReadout | None = None
        if any(r.readout is not None for r in requests):
            if hooks is None:
                raise ValueError("Requests with a readout need SteeringHooks")
            self._read()
            hooks.attach(self.readout.layers)
        self.input_ids, mask, positions = pad_left(
            [r.prompt_ids + r.generated_ids for r in requests], loaded.pad_id, device
        )
        self._mask = StepMask(mask)
        self._decode_mask = decode_mask_applies(loaded.model)
        self.next_position = positions[:, -1] + 1
        self.cache = None
        self._extra = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}
        self._positions = positions
        width = self.input_ids.shape[1]
        # Columns per prefill pass; the last pass takes the remainder and samples.
        self._chunk_columns = width if prefill_chunk is None else max(1, prefill_chunk // len(requests))
        self._prefilled: int | None = 0  # prompt columns already in the cache; None once all are
        self.steps = 0

    # The padding mask [rows, columns] (filled part of the `StepMask`); assigning adopts it.
    mask = property(lambda self: self._mask.value, lambda self, mask: setattr(self._mask, "value", mask))

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
        return not self.done and not self.prefilling and cache_is_joinable(self.cache)

    def _read(self) -> None:
        # Rebuilt when the rows or their steering change: its offsets are per row.
        probes = [row.request.readout for row in self.rows]
        self.readout = BatchReadout(probes, self.steering.deltas if self.steering else None) if any(probes) else None

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor | None = None
    ) -> torch.Tensor:
        steering = self.steering.on_columns(columns) if self.steering is not None else None
        observers = self.readout.observers() if self.readout is not None else None
        context = self.hooks.active(steering, observers) if self.hooks is not None else nullcontext()
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
            mask = self._mask.decode_mask() if self._decode_mask else self.mask
            logits = self._forward(self.input_ids, mask, self._positions)
        else:
            start, width = self._prefilled, self.input_ids.shape[1]
            stop = min(width, start + self._chunk_columns)
            columns = self._prompt_columns(width)
            logits = self._forward(
                self.input_ids[:, start:stop], self.mask[:, :stop], self._positions[:, start:stop],
                None if columns is None else columns[:, start:stop],
            )
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
        readings = self.readout.readings() if self.readout is not None else [None] * len(self.rows)
        for position, row in enumerate(self.rows):
            if row.request.cancel.is_set():
                events.append(TokenEvent(row.index, row.detok.flush(), None, "cancelled"))
                continue
            try:
                if not finite[position]:
                    raise RowFault(NON_FINITE)
                if row.sampler.greedy:
                    token = greedy[position]  # the batch's argmax, computed once
                else:
                    token = row.sampler.next_token(logits[position], row.detok.ids)
            except RowFault as fault:
                events.append(TokenEvent(row.index, row.detok.flush(), None, "error", error=str(fault), fault="request"))
                continue
            if token in stop_ids:  # not part of the answer: nor is its reading
                events.append(TokenEvent(row.index, row.detok.flush(), token, "stop"))
                continue
            text = row.detok.push(token)
            if len(row.detok.ids) >= row.params.max_new_tokens:
                events.append(TokenEvent(row.index, text + row.detok.flush(), token, "length", readout=readings[position]))
                continue
            events.append(TokenEvent(row.index, text, token, readout=readings[position]))
            keep.append(position)
            next_tokens.append(token)
        self._advance(keep, next_tokens)
        return events

    def _prompt_columns(self, width: int) -> torch.Tensor | None:
        """[rows, width] weights of the prefill's columns, when a steered row steers only its
        answer: 1 from its last prompt column on (a resumed answer's tokens were steered when
        they were generated), 0 before; 1 everywhere for the other rows. None when all steer all."""
        if self.steering is None or all(row.request.steer_prompt for row in self.rows):
            return None
        columns = torch.ones(len(self.rows), width)
        for i, row in enumerate(self.rows):
            if not row.request.steer_prompt:
                columns[i, : width - len(row.request.generated_ids) - 1] = 0.0
        return columns

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
        if self.readout is not None:
            self._read()
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
            self._mask.select(index)
            self.next_position = self.next_position[index]
            if self.steering is not None:
                self.steering = self.steering.select(keep)
            if self.readout is not None:
                self._read()
            self._drop_shared_padding()
        self.input_ids = torch.tensor(next_tokens, device=device)[:, None]
        self._mask.extend()
        self._positions = self.next_position[:, None]
        self.next_position = self.next_position + 1

    def _drop_shared_padding(self) -> None:
        # Once the longest row has left, the leading cache columns may be padding for every
        # row still here; without this, a batch that newcomers keep joining would only grow.
        if not cache_is_joinable(self.cache):
            return
        unused = int(self.mask.any(0).long().argmax())  # the first column some row attends to
        if unused == 0:
            return
        for layer in self.cache.layers:
            trim_layer(layer, unused)
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
        layers = [joined_layer(mine, theirs) for mine, theirs in zip(self.cache.layers, other.cache.layers)]
        width = max(self.mask.shape[1], other.mask.shape[1])
        mask = torch.cat([pad_columns(self.mask, width), pad_columns(other.mask, width)])
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
        if self.readout is not None or other.readout is not None:
            self._read()
        other.rows, other.cache = [], None


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
