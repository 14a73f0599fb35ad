"""The KV-cache layer with reserved room (`GrowingLayer`): it holds exactly what transformers'
`DynamicLayer` holds after the same operations, decode steps write in place, and generation
gives the same tokens with it as without it."""

import torch
from transformers.cache_utils import DynamicLayer

from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteeringHooks
from steering.engine.kvcache import GROWTH, GrowingLayer
from tests.tiny_models import build_tiny


def _states(generator, rows, columns, heads=2, dim=4):
    return (
        torch.randn(rows, heads, columns, dim, generator=generator),
        torch.randn(rows, heads, columns, dim + 1, generator=generator),  # values may be wider
    )


def _same(growing: GrowingLayer, plain: DynamicLayer) -> None:
    assert torch.equal(growing.keys, plain.keys) and torch.equal(growing.values, plain.values)
    assert growing.get_seq_length() == plain.get_seq_length()


def test_it_holds_what_a_dynamic_layer_holds_through_every_operation():
    g = torch.Generator().manual_seed(0)
    growing, plain = GrowingLayer(), DynamicLayer()
    for columns in (7, 1, 1, 3, 1):  # a prefill, decode steps, a chunk
        keys, values = _states(g, 3, columns)
        out_growing, out_plain = growing.update(keys, values), plain.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(out_growing, out_plain))
        _same(growing, plain)
    assert growing.capacity > growing.get_seq_length()  # room was reserved
    index = torch.tensor([0, 2])
    growing.batch_select_indices(index), plain.batch_select_indices(index)
    _same(growing, plain)
    for layer in (growing, plain):  # trimming the oldest columns, as DecodeBatch does
        layer.keys = layer.keys[:, :, 2:, :]
        layer.values = layer.values[:, :, 2:, :]
    _same(growing, plain)
    growing.crop(9), plain.crop(9)
    _same(growing, plain)
    keys, values = _states(g, 2, 1)
    growing.update(keys, values), plain.update(keys, values)
    _same(growing, plain)


def test_decode_steps_write_into_the_reserved_room_without_reallocating():
    g = torch.Generator().manual_seed(1)
    layer = GrowingLayer()
    layer.update(*_states(g, 2, 5))  # the first update reserves room
    layer.update(*_states(g, 2, 1))
    buffer, capacity = layer._buffers["keys"].data_ptr(), layer.capacity
    assert capacity >= 5 + GROWTH
    for _ in range(capacity - 6):
        layer.update(*_states(g, 2, 1))
    assert layer._buffers["keys"].data_ptr() == buffer and layer.get_seq_length() == capacity
    layer.update(*_states(g, 2, 1))  # full: it grows, keeping what it held
    assert layer.capacity > capacity and layer.get_seq_length() == capacity + 1


def _texts(loaded, hooks, requests, reserve: bool) -> tuple[list[str], DecodeBatch]:
    batch = DecodeBatch(loaded, hooks, requests)
    batch.reserve_cache = reserve
    texts = [""] * len(requests)
    kinds = set()
    while not batch.done:
        for event in batch.step():
            texts[event.index] += event.text
        if batch.cache is not None:
            kinds |= {type(layer) for layer in batch.cache.layers}
    return texts, kinds


def test_generation_gives_the_same_tokens_with_and_without_reserved_room():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    g = torch.Generator().manual_seed(2)
    steer = {1: 4.0 * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64)}
    prompts = ["hello world", "a much longer prompt than the first one, to pad", "three"]
    # Rows end at different steps, so the cache also loses rows on the way (batch_select_indices).
    requests = [
        GenerationRequest(loaded.chat_ids(p), GenerationParams(max_new_tokens=n), steering=s)
        for p, n, s in zip(prompts, (90, 5, 40), (steer, {}, steer))
    ]
    reserved, kinds = _texts(loaded, hooks, requests, True)
    plain, plain_kinds = _texts(loaded, hooks, requests, False)
    assert kinds == {GrowingLayer} and GrowingLayer not in plain_kinds
    assert reserved == plain and all(reserved)
