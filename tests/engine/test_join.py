"""Requests joining a running DecodeBatch (`merge`) get exactly what they get alone."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, LoadedModel, SteeringHooks, stream_batch

from tests.tiny_models import ALL_FAMILIES, CORE_FAMILIES, family_configs, make_tokenizer

SHORT = "hello world"
LONG = "please find attached the documents you requested yesterday, the quarterly report"


def _request(loaded, prompt, max_new_tokens, steering=None):
    return GenerationRequest(
        prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=max_new_tokens), steering=steering or {}
    )


def _delta(loaded, layers, seed, scale=6.0):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64) for layer in layers}


def _alone(loaded, hooks, request) -> list[int]:
    return [e.token_id for e in stream_batch(loaded, hooks, [request]) if e.token_id is not None]


def _collect(tokens, events):
    for event in events:
        if event.token_id is not None:
            tokens.setdefault(event.index, []).append(event.token_id)


def _run_with_joins(loaded, hooks, groups, join_after) -> tuple[dict[int, list[int]], DecodeBatch]:
    """Start a batch with groups[0]; after join_after[i] more steps, prefill groups[i + 1]
    as a batch of its own and merge it in. Returns {key: tokens} with keys 0, 1, … over all
    groups in order."""
    tokens: dict[int, list[int]] = {}
    next_key = 0

    def batch_of(group):
        nonlocal next_key
        keys = range(next_key, next_key + len(group))
        next_key += len(group)
        return DecodeBatch(loaded, hooks, group, keys=keys)

    running = batch_of(groups[0])
    for group, steps in zip(groups[1:], join_after):
        for _ in range(steps):
            _collect(tokens, running.step())
        newcomers = batch_of(group)
        _collect(tokens, newcomers.step())
        assert running.joinable and newcomers.joinable
        running.merge(newcomers)
        assert newcomers.done
    while not running.done:
        _collect(tokens, running.step())
    return tokens, running


def _tiny(family, **overrides) -> LoadedModel:
    """A tiny model as in tests.tiny_models, with config overrides (e.g. a short sliding window)."""
    tokenizer = make_tokenizer()
    config = family_configs(len(tokenizer))[family]
    for name, value in overrides.items():
        setattr(config, name, value)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float64).eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, model_id=f"tiny-{family}")
    loaded.stop_ids = frozenset()  # every row runs to its own length
    return loaded


STEERING_CASES = {
    "unsteered": ((), ()),
    "both sides, different layers": ((1, 2), (2, 3)),
    "only the running rows": ((1, 2), ()),
    "only the newcomers": ((), (0, 3)),
}


# Every steering case on the core families; the others once, steered on both sides.
JOIN_CASES = [(family, case) for family in CORE_FAMILIES for case in STEERING_CASES] + [
    (family, "both sides, different layers") for family in ALL_FAMILIES if family not in CORE_FAMILIES
]


@pytest.mark.parametrize("family, case", JOIN_CASES)
def test_it_gives_rows_that_join_later_exactly_what_they_get_alone(family, case):
    loaded = _tiny(family)
    hooks = SteeringHooks(loaded.layers, range(loaded.num_layers))
    running_layers, newcomer_layers = STEERING_CASES[case]

    def groups(running_layers=running_layers, newcomer_layers=newcomer_layers):
        # The first newcomers have a longer cache than the running rows, the second ones a
        # shorter one: both sides get padded. Rows have different lengths, so some leave
        # while others keep going; one row of each group is left unsteered.
        return [
            [_request(loaded, SHORT, 10, _delta(loaded, running_layers, 1)), _request(loaded, "wanna grab coffee", 3)],
            [_request(loaded, LONG, 6, _delta(loaded, newcomer_layers, 2)), _request(loaded, "yeah", 8)],
            [_request(loaded, "hey", 2), _request(loaded, SHORT, 5, _delta(loaded, newcomer_layers, 3))],
        ]

    joined, _ = _run_with_joins(loaded, hooks, groups(), join_after=[2, 3])
    alone = [_alone(loaded, hooks, request) for group in groups() for request in group]
    assert [joined[key] for key in range(6)] == alone
    assert [len(tokens) for tokens in alone] == [10, 3, 6, 8, 2, 5]
    if case == "both sides, different layers":
        # The steering is strong enough to matter, so the test would see it misapplied.
        plain = [_alone(loaded, None, request) for group in groups((), ()) for request in group]
        assert plain != alone


@pytest.mark.parametrize("family", ["gemma2", "mistral"])
def test_it_joins_rows_on_sliding_window_layers_past_the_window(family):
    loaded = _tiny(family, sliding_window=6)
    assert any(layer_type == "sliding_attention" for layer_type in getattr(loaded.model.config, "layer_types", None) or ["sliding_attention"])

    def groups():
        # The long prompt's row leaves first, so the cache is also trimmed past the window.
        return [[_request(loaded, LONG, 5)], [_request(loaded, "hey", 10)], [_request(loaded, SHORT, 6)]]

    joined, _ = _run_with_joins(loaded, None, groups(), join_after=[2, 2])
    assert [joined[key] for key in range(3)] == [_alone(loaded, None, r) for group in groups() for r in group]


def test_the_cache_sheds_padding_no_row_needs_once_the_longest_row_leaves():
    loaded = _tiny("llama")
    long_row, short_row = _request(loaded, LONG, 3), _request(loaded, "hey", 10)
    batch = DecodeBatch(loaded, None, [long_row, short_row])
    tokens: dict[int, list[int]] = {}
    lengths = []
    while not batch.done:
        _collect(tokens, batch.step())
        if batch.cache is not None:
            lengths.append(batch.cache.get_seq_length())
    assert lengths[2] < lengths[1]  # the long prompt's row left after its third token
    assert lengths[2] == len(short_row.prompt_ids) + 2
    assert tokens[1] == _alone(loaded, None, _request(loaded, "hey", 10))


def test_events_carry_the_keys_the_caller_gave():
    loaded = _tiny("gpt2")
    batch = DecodeBatch(loaded, None, [_request(loaded, SHORT, 2), _request(loaded, "hey", 2)], keys=[41, 7])
    assert {event.index for event in batch.step()} == {41, 7}
    assert batch.keys == [41, 7]


def test_it_refuses_merges_it_cannot_do_and_then_runs_on_unchanged():
    loaded = _tiny("qwen2")
    hooks = SteeringHooks(loaded.layers, [1])
    running = DecodeBatch(loaded, hooks, [_request(loaded, SHORT, 8, _delta(loaded, [1], 1))], keys=[1])
    fresh = DecodeBatch(loaded, hooks, [_request(loaded, "hey", 8)], keys=[2])
    assert not running.joinable
    with pytest.raises(ValueError, match="prefill"):
        running.merge(fresh)
    tokens: dict[int, list[int]] = {}
    _collect(tokens, running.step())

    def newcomer(key, hooks=hooks):
        batch = DecodeBatch(loaded, hooks, [_request(loaded, LONG, 8, _delta(loaded, [1], 2))], keys=[key])
        batch.step()
        return batch

    with pytest.raises(ValueError, match=r"keys \[1\]"):
        running.merge(newcomer(1))
    with pytest.raises(ValueError, match="different hooks"):
        running.merge(newcomer(3, SteeringHooks(loaded.layers, [1])))
    broken = newcomer(4)
    broken.steering.deltas[1] = torch.zeros(1, loaded.hidden_size + 1, dtype=loaded.dtype)
    with pytest.raises(RuntimeError):
        running.merge(broken)
    assert running.keys == [1]
    while not running.done:
        _collect(tokens, running.step())
    assert tokens[1] == _alone(loaded, hooks, _request(loaded, SHORT, 8, _delta(loaded, [1], 1)))
