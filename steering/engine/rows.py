"""Prompt rows answered in one batch, each under its own steering: what the sweeps and the range
searches generate with.

- `generate_rows`: (prompt ids, layer deltas) rows decoded as one batch, their texts in order.
- `hooks_on`: the caller's hooks attached to the steered layers too, or hooks made for the run.
- `unit_range`: vectors whose strength is in residual-norm units (range 1 on every dimension).

Rows are independent (per-row steering), so batching them changes nothing but the speed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from .generation import stream_batch
from .hooks import SteeringHooks
from .loading import LoadedModel
from .request import GenerationParams, GenerationRequest
from .vectorfile import SteeringVectors

Progress = Callable[[int, int], None]


@contextmanager
def hooks_on(loaded: LoadedModel, hooks: SteeringHooks | None, layers: Sequence[int]) -> Iterator[SteeringHooks]:
    """The caller's hooks, hooked on `layers` too; or hooks made for this sweep and removed after."""
    if hooks is not None:
        hooks.attach(layers)
        yield hooks
        return
    with SteeringHooks(loaded.layers, layers) as own:
        yield own


def generate_rows(
    loaded: LoadedModel,
    hooks: SteeringHooks,
    rows: Sequence[tuple[list[int], dict[int, torch.Tensor]]],
    params: GenerationParams,
    *,
    progress: Progress | None = None,
    steer_prompt: bool = True,
) -> list[str]:
    """Each (prompt ids, layer deltas) row answered, all in one batch: the rows' texts in order.
    `progress(done, total)` counts tokens, a row that ends early counting as complete.
    `steer_prompt`: the vector set's (SteeringVectors.steer_prompt), so rows are steered as served."""
    requests = [GenerationRequest(prompt_ids=ids, params=params, steering=steering, steer_prompt=steer_prompt)
                for ids, steering in rows]
    texts = [""] * len(requests)
    total, done = len(requests) * params.max_new_tokens, 0
    produced = [0] * len(requests)
    for event in stream_batch(loaded, hooks, requests):
        texts[event.index] += event.text
        before = produced[event.index]
        produced[event.index] = params.max_new_tokens if event.finish else before + (event.token_id is not None)
        done += produced[event.index] - before
        if progress:
            progress(done, total)
    return texts


def unit_range(vectors: SteeringVectors) -> SteeringVectors:
    """A copy whose strength s adds s × residual norm: strengths in residual-norm units. Without
    the set's joint budget, which would cap a candidate above it (a set re-measured with one
    measured every candidate over it as the budget)."""
    return vectors.with_ranges(dict.fromkeys(vectors.dimensions, 1.0)).with_joint_range(None)
