"""bfloat16 serving: the dtype choice, and isolation that holds in bf16.

In float32 a row's text alone equals its text in any batch (test_join, test_generation). In
bfloat16 that need not hold: the CPU kernels round differently for another batch shape. What
must still hold is what isolation means: with the batch's shape fixed, a row's output never
changes when its neighbours' steering changes. Row i's activations are computed from row i's
inputs only, so its tokens (and logits) are the same bit for bit, however the others are steered.
"""

import pytest
import torch

from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteeringHooks, load_model
from steering.engine.loading import cpu_has_fast_bf16, fastest_dtype, resolve_dtype

from tests.tiny_models import CORE_FAMILIES, build_tiny

PROMPTS = ["hello world", "please find attached the documents", "the report", "you requested yesterday the quarterly"]
CPU = torch.device("cpu")


def test_auto_picks_bfloat16_exactly_where_the_cpu_computes_it():
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert fastest_dtype(CPU) == resolve_dtype("auto", CPU) == expected
    assert resolve_dtype(None, CPU) == torch.float32  # the engine's default stays exact
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype(torch.float64, CPU) == torch.float64
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'"):
        resolve_dtype("fp8", CPU)


def _delta(hidden, layers, seed, scale):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(hidden, generator=g) for layer in layers}


def _run(loaded, hooks, steerings, *, tokens, join_after=None):
    """Greedy tokens and per-step logits of each row. With `join_after`, the last two rows
    prefill on their own after that many steps and merge into the running batch."""
    requests = [
        GenerationRequest(
            prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=tokens), steering=steering
        )
        for prompt, steering in zip(PROMPTS, steerings)
    ]
    out: dict[int, list[int]] = {}
    if join_after is None:
        batch = DecodeBatch(loaded, hooks, requests)
    else:
        batch = DecodeBatch(loaded, hooks, requests[:2], keys=[0, 1])
        for _ in range(join_after):
            _collect(out, batch.step())
        newcomers = DecodeBatch(loaded, hooks, requests[2:], keys=[2, 3])
        _collect(out, newcomers.step())
        batch.merge(newcomers)
    while not batch.done:
        _collect(out, batch.step())
    return out


def _collect(out, events):
    for event in events:
        if event.token_id is not None:
            out.setdefault(event.index, []).append(event.token_id)


def _stop_never(loaded):
    # Every row runs to max_new_tokens, so the batch keeps its shape in both runs.
    loaded.stop_ids = frozenset()
    return loaded


@pytest.mark.parametrize("family", CORE_FAMILIES)
@pytest.mark.parametrize("join_after", [None, 3])
def test_in_bf16_a_rows_output_does_not_change_when_its_neighbours_steering_changes(family, join_after):
    loaded = _stop_never(build_tiny(family, dtype=torch.bfloat16))
    assert loaded.dtype == torch.bfloat16
    layers = range(loaded.num_layers)
    hooks = SteeringHooks(loaded.layers, layers)
    mine = _delta(loaded.hidden_size, layers, seed=1, scale=4.0)
    first = [mine, *(_delta(loaded.hidden_size, layers, seed=10 + i, scale=4.0) for i in range(3))]
    second = [mine, {}, *(_delta(loaded.hidden_size, layers, seed=20 + i, scale=8.0) for i in range(2))]
    a = _run(loaded, hooks, first, tokens=10, join_after=join_after)
    b = _run(loaded, hooks, second, tokens=10, join_after=join_after)
    assert a[0] == b[0]
    # Not vacuous: the neighbours' changed steering did change their own text.
    assert any(a[i] != b[i] for i in (1, 2, 3))


@pytest.mark.slow
def test_in_bf16_the_embedded_models_rows_are_isolated_from_their_neighbours_steering():
    loaded = _stop_never(load_model(dtype="bfloat16"))
    layers = range(8, 24)
    hooks = SteeringHooks(loaded.layers, layers)
    # Deltas the size of real steering at a strength near the functional range's end.
    mine = _delta(loaded.hidden_size, layers, seed=1, scale=0.25)
    first = [mine, {}, *(_delta(loaded.hidden_size, layers, seed=10 + i, scale=0.25) for i in range(2))]
    second = [mine, *(_delta(loaded.hidden_size, layers, seed=20 + i, scale=0.4) for i in range(3))]
    a = _run(loaded, hooks, first, tokens=12, join_after=2)
    b = _run(loaded, hooks, second, tokens=12, join_after=2)
    assert a[0] == b[0]
    assert any(a[i] != b[i] for i in (1, 2, 3))
