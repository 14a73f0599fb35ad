import threading

import pytest
import torch

from steering.engine import GenerationParams, GenerationRequest, RowSteering, SteeringHooks, stream_batch
from steering.engine.hooks import current_steering

from tests.tiny_models import ALL_FAMILIES, build_tiny

PROMPTS = ["hello world", "what is the report", "wanna grab coffee", "please find the documents"]


def _delta(loaded, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64) for layer in (1, 2)}


def _requests(loaded, steerings, max_new_tokens=8):
    return [
        GenerationRequest(
            prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=max_new_tokens), steering=s
        )
        for prompt, s in zip(PROMPTS, steerings)
    ]


def _run(loaded, hooks, requests):
    texts, tokens = [""] * len(requests), [[] for _ in requests]
    for event in stream_batch(loaded, hooks, requests):
        texts[event.index] += event.text
        if event.token_id is not None:
            tokens[event.index].append(event.token_id)
    return texts, tokens


def test_it_gives_each_row_of_a_mixed_batch_what_it_gets_alone(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    steerings = [_delta(tiny, 4.0, 1), {}, _delta(tiny, -4.0, 2), _delta(tiny, 8.0, 3)]
    _, batched = _run(tiny, hooks, _requests(tiny, steerings))
    alone = [_run(tiny, hooks, [request])[1][0] for request in _requests(tiny, steerings)]
    assert batched == alone
    # The steering is strong enough to matter: the steered rows differ from unsteered ones.
    _, plain = _run(tiny, hooks, _requests(tiny, [{}] * 4))
    assert plain[1] == batched[1]
    assert sum(plain[i] != batched[i] for i in (0, 2, 3)) >= 2


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_it_steers_every_family_and_counts_the_hook_calls(family):
    loaded = build_tiny(family)
    hooks = SteeringHooks(loaded.layers, [1, 2])
    requests = _requests(loaded, [_delta(loaded, 50.0, 1)], max_new_tokens=5)
    _, steered = _run(loaded, hooks, requests)
    passes = len(steered[0]) if len(steered[0]) == 5 else len(steered[0]) + 1
    assert hooks.fired[1] == hooks.fired[2] == passes  # prefill + one pass per later token
    assert hooks.fired[0] == 0
    _, plain = _run(loaded, None, _requests(loaded, [{}], max_new_tokens=5))
    assert steered != plain


def test_rows_without_steering_get_exactly_nothing_added(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    ids = torch.tensor([tiny.chat_ids(PROMPTS[0])] * 2)
    baseline = tiny.model(ids).logits
    steering = RowSteering.from_rows([{}, _delta(tiny, 5.0, 1)], dtype=tiny.dtype, device=tiny.device)
    with hooks.active(steering):
        logits = tiny.model(ids).logits
    assert torch.equal(logits[0], baseline[0])
    assert not torch.allclose(logits[1], baseline[1])


def test_no_steering_is_left_behind_after_an_exception(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    ids = torch.tensor([tiny.chat_ids(PROMPTS[0])])
    baseline = tiny.model(ids).logits
    wrong_rows = RowSteering.from_rows([_delta(tiny, 5.0, 1)] * 3, dtype=tiny.dtype, device=tiny.device)
    with pytest.raises(RuntimeError, match="3 rows"):
        with hooks.active(wrong_rows):
            tiny.model(ids)
    assert current_steering() is None
    assert torch.equal(tiny.model(ids).logits, baseline)


def test_no_steering_is_left_behind_when_a_stream_is_abandoned(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    ids = torch.tensor([tiny.chat_ids(PROMPTS[0])])
    baseline = tiny.model(ids).logits
    requests = _requests(tiny, [_delta(tiny, 5.0, 1)], max_new_tokens=50)
    stream = stream_batch(tiny, hooks, requests)
    next(stream)
    stream.close()
    assert requests[0].cancel.is_set()
    assert current_steering() is None
    assert torch.equal(tiny.model(ids).logits, baseline)


def test_removing_the_hooks_leaves_the_layers_clean(tiny):
    with SteeringHooks(tiny.layers, [0, 1, 2]) as hooks:
        assert hooks.attached == [0, 1, 2]
        assert all(len(tiny.layers[i]._forward_hooks) == 1 for i in (0, 1, 2))
    assert all(len(layer._forward_hooks) == 0 for layer in tiny.layers)


def test_it_attaches_each_layer_once_and_refuses_unhooked_layers(tiny):
    hooks = SteeringHooks(tiny.layers, [1])
    hooks.attach([1, 2])
    assert len(tiny.layers[1]._forward_hooks) == 1
    with pytest.raises(IndexError):
        hooks.attach([99])
    steering = RowSteering.from_rows([{3: torch.ones(tiny.hidden_size)}], dtype=tiny.dtype, device=tiny.device)
    with pytest.raises(ValueError, match="no hook"):
        with hooks.active(steering):
            pass


def test_steering_in_one_thread_is_invisible_to_another():
    loaded = build_tiny("llama")
    hooks = SteeringHooks(loaded.layers, [1, 2])
    steering = RowSteering.from_rows([_delta(loaded, 5.0, 1)], dtype=loaded.dtype, device=loaded.device)
    inside, seen_elsewhere = threading.Event(), []
    release = threading.Event()

    def steered():
        with hooks.active(steering):
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=steered)
    worker.start()
    inside.wait(5)
    seen_elsewhere.append(current_steering())
    release.set()
    worker.join()
    assert seen_elsewhere == [None]


def test_a_second_set_of_hooks_on_the_same_layers_adds_nothing_twice(tiny):
    """The site keeps hooks on every layer while a sweep (the functional-range search) or a
    reference computation puts its own on the same model: each set adds only the steering
    activated on it, so a delta is added once, whichever set runs the pass."""
    steering = {layer: delta.float() for layer, delta in _delta(tiny, 4.0, 1).items()}
    ids = torch.tensor([tiny.chat_ids(PROMPTS[0])])

    def logits(hooks, scale=1.0):
        rows = RowSteering.from_rows([{k: v * scale for k, v in steering.items()}], dtype=tiny.dtype, device=tiny.device)
        with torch.inference_mode(), hooks.active(rows):
            return tiny.model(input_ids=ids).logits[0, -1]

    with SteeringHooks(tiny.layers, [1, 2]) as first:
        once = logits(first)
        twice = logits(first, 2.0)
        with SteeringHooks(tiny.layers, range(len(tiny.layers))) as site_wide:
            assert torch.equal(logits(first), once)
            assert torch.equal(logits(site_wide), once)
            assert sum(site_wide.fired.values()) == 2  # its own pass only, layers 1 and 2
    assert not torch.allclose(once, twice)  # the check above could see a double delta
