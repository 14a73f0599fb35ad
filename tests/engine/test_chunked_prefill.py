"""Chunked prefill: a batch that prefills its prompts a few columns per step generates
exactly what it generates with the whole prompts in one pass."""

import pytest
import torch

from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteeringHooks

from tests.tiny_models import CORE_FAMILIES, build_tiny

PROMPTS = ["hello world", "please find attached the documents you requested yesterday, the quarterly report", "yeah"]


def _requests(loaded, tokens=6):
    g = torch.Generator().manual_seed(0)
    steering = [{1: 6.0 * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64)}, {}, {}]
    return [
        GenerationRequest(prompt_ids=loaded.chat_ids(p), params=GenerationParams(max_new_tokens=tokens), steering=s)
        for p, s in zip(PROMPTS, steering)
    ]


def _run(loaded, hooks, requests, prefill_chunk):
    batch = DecodeBatch(loaded, hooks, requests, prefill_chunk=prefill_chunk)
    silent_steps, tokens = 0, {}
    while batch.prefilling:
        events = batch.step()
        silent_steps += not events
    while True:
        for event in events:
            if event.token_id is not None:
                tokens.setdefault(event.index, []).append(event.token_id)
        if batch.done:
            return tokens, silent_steps
        events = batch.step()


@pytest.mark.parametrize("family", CORE_FAMILIES)
@pytest.mark.parametrize("chunk", [1, 7, 20])
def test_a_chunked_prefill_generates_exactly_what_a_whole_one_does(family, chunk):
    loaded = build_tiny(family)
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1])
    whole, silent = _run(loaded, hooks, _requests(loaded), None)
    assert silent == 0
    chunked, silent = _run(loaded, hooks, _requests(loaded), chunk)
    width = max(len(loaded.chat_ids(p)) for p in PROMPTS)
    columns = max(1, chunk // len(PROMPTS))
    assert silent == -(-width // columns) - 1  # every pass but the last returns no events
    assert chunked == whole


def test_a_row_cancelled_between_chunks_leaves_at_once_and_the_others_go_on():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1])
    expected, _ = _run(loaded, hooks, _requests(loaded), None)
    requests = _requests(loaded)
    batch = DecodeBatch(loaded, hooks, requests, prefill_chunk=3)
    assert batch.step() == [] and batch.prefilling and not batch.joinable
    requests[1].cancel.set()
    events = batch.step()
    assert [(e.index, e.finish) for e in events] == [(1, "cancelled")]
    assert batch.keys == [0, 2]
    tokens = {}
    while not batch.done:
        for event in batch.step():
            if event.token_id is not None:
                tokens.setdefault(event.index, []).append(event.token_id)
    assert tokens == {0: expected[0], 2: expected[2]}


def test_it_refuses_a_chunk_of_no_tokens():
    loaded = build_tiny("llama")
    with pytest.raises(ValueError, match="prefill_chunk"):
        DecodeBatch(loaded, None, _requests(loaded), prefill_chunk=0)
