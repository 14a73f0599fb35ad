import pytest
import torch

from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, stream_batch
from steering.engine.tokens import Detokenizer, guard_repetition

from tests.tiny_models import build_tiny


def _generate(loaded, prompt="hello world", **params):
    request = GenerationRequest(prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(**params))
    events = list(stream_batch(loaded, None, [request]))
    return events


def _tokens(events):
    return [e.token_id for e in events if e.token_id is not None and e.finish != "stop"]


def test_greedy_decoding_matches_transformers_generate(tiny):
    tiny.model.generation_config.eos_token_id = None  # compare the full length
    ids = tiny.chat_ids("what is the report")
    expected = tiny.model.generate(
        torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=tiny.pad_id
    )[0, len(ids):].tolist()
    stop_ids = tiny.stop_ids
    tiny.stop_ids = frozenset()
    try:
        events = _generate(tiny, "what is the report", max_new_tokens=12)
    finally:
        tiny.stop_ids = stop_ids
    assert _tokens(events) == expected
    assert events[-1].finish == "length"


def test_it_streams_text_that_adds_up_to_the_whole_answer(tiny):
    events = _generate(tiny, max_new_tokens=20)
    tokens = _tokens(events)
    assert "".join(e.text for e in events) == tiny.tokenizer.decode(tokens, skip_special_tokens=True)
    assert len(events) == len(tokens) + (events[-1].finish == "stop")


def test_it_stops_at_the_end_of_turn():
    loaded = build_tiny("llama")
    end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Make the end-of-turn token the model's certain choice after the first token.
    with torch.no_grad():
        loaded.model.lm_head.weight[end] = loaded.model.lm_head.weight.sum(0) * 0 + 1000 * loaded.model.lm_head.weight[end]
    events = _generate(loaded, max_new_tokens=30)
    assert events[-1].finish == "stop"
    assert len(events) < 30


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    loaded = build_tiny("qwen2")
    runs = [_tokens(_generate(loaded, temperature=1.5, seed=7, max_new_tokens=16)) for _ in range(2)]
    assert runs[0] == runs[1]
    others = {tuple(_tokens(_generate(loaded, temperature=1.5, seed=s, max_new_tokens=16))) for s in range(5)}
    assert len(others) > 1


def test_top_k_one_and_a_tiny_top_p_are_greedy():
    loaded = build_tiny("gpt2")
    greedy = _tokens(_generate(loaded, max_new_tokens=10))
    assert _tokens(_generate(loaded, temperature=1.0, top_k=1, seed=1, max_new_tokens=10)) == greedy
    assert _tokens(_generate(loaded, temperature=1.0, top_p=1e-6, seed=1, max_new_tokens=10)) == greedy


def test_the_repetition_penalty_lowers_used_tokens_whatever_their_sign():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    guarded = guard_repetition(logits, [0, 1, 1], GenerationParams(repetition_penalty=2.0))
    assert guarded.tolist() == [1.0, -4.0, 1.0, 0.5]  # each used token once, however often used
    assert logits.tolist() == [2.0, -2.0, 1.0, 0.5]  # the batch's logits are left alone
    assert guard_repetition(logits, [0, 1], GenerationParams()) is logits  # off: no copy


def test_no_repeat_ngram_forbids_the_token_that_would_repeat_an_ngram():
    params = GenerationParams(no_repeat_ngram_size=3)
    logits = torch.zeros(10)
    # 5 6 7 … 5 6: a 7 next would repeat "5 6 7"; 9 after "6 9" is not a repeat of anything.
    guarded = guard_repetition(logits, [5, 6, 7, 1, 5, 6], params)
    assert torch.isinf(guarded[7]) and torch.isfinite(guarded).sum() == 9
    assert torch.isfinite(guard_repetition(logits, [5, 6, 7, 1, 6, 9], params)).all()


def test_a_guarded_answer_never_repeats_an_ngram_greedy_or_sampled(tiny):
    tiny.stop_ids = frozenset()
    plain = _tokens(_generate(tiny, max_new_tokens=40))
    for params in ({}, {"temperature": 1.0, "seed": 3}):
        tokens = _tokens(_generate(tiny, max_new_tokens=40, no_repeat_ngram_size=2, **params))
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(bigrams) == len(set(bigrams)) and len(tokens) == 40
    # A tiny random model loops at once, so the guard has something to change.
    assert len(set(zip(plain, plain[1:]))) < len(plain) - 1


def test_guarded_rows_in_a_batch_match_their_answers_alone(tiny):
    tiny.stop_ids = frozenset()
    options = [{}, {"repetition_penalty": 1.5}, {"no_repeat_ngram_size": 2, "temperature": 0.8, "seed": 4}]
    requests = [
        GenerationRequest(prompt_ids=tiny.chat_ids("hello world"), params=GenerationParams(max_new_tokens=16, **o))
        for o in options
    ]
    together = [[] for _ in options]
    for event in stream_batch(tiny, None, requests):
        together[event.index].append(event)
    assert [_tokens(events) for events in together] == [
        _tokens(_generate(tiny, max_new_tokens=16, **o)) for o in options
    ]


def test_a_cancelled_request_stops_between_tokens_and_frees_its_row(tiny):
    requests = [
        GenerationRequest(prompt_ids=tiny.chat_ids(p), params=GenerationParams(max_new_tokens=40))
        for p in ("hello world", "what is the report")
    ]
    tiny.stop_ids = frozenset()
    events = []
    for event in stream_batch(tiny, None, requests):
        events.append(event)
        if event.index == 0 and len([e for e in events if e.index == 0]) == 3:
            requests[0].cancel.set()
    first = [e for e in events if e.index == 0]
    assert first[-1].finish == "cancelled"
    assert len(first) == 4
    assert [e for e in events if e.index == 1][-1].finish == "length"


def test_the_detokenizer_never_splits_a_character():
    loaded = build_tiny("llama")
    text = "héllo 🙂 world, déjà vu"
    ids = loaded.tokenizer(text)["input_ids"]
    detok = Detokenizer(loaded.tokenizer)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == text
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -5}, "seed"),
        ({"repetition_penalty": 0.9}, "repetition_penalty"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ],
)
def test_it_rejects_bad_parameters_with_a_message(params, message):
    with pytest.raises(ValueError, match=message):
        GenerationParams(**params)


def test_it_rejects_an_empty_prompt():
    with pytest.raises(ValueError, match="empty"):
        GenerationRequest(prompt_ids=[])


def test_a_row_that_steers_only_its_answer_reads_its_prompt_unsteered(tiny):
    """steer_prompt=False: the prompt's cache is the unsteered one but for its last position, so
    the first answer token is steered, and a batch neighbour steering its prompt is unaffected."""
    from steering.engine import DecodeBatch

    hooks = SteeringHooks(tiny.layers, [1, 2])
    g = torch.Generator().manual_seed(3)
    delta = {layer: 6.0 * torch.randn(tiny.hidden_size, generator=g) for layer in (1, 2)}
    prompt = tiny.chat_ids("tell me about the sea")

    def first_pass(*requests):
        batch = DecodeBatch(tiny, hooks, list(requests))
        batch.step()
        return batch

    plain = first_pass(GenerationRequest(prompt_ids=prompt, params=GenerationParams(max_new_tokens=4)))
    answer_only = first_pass(GenerationRequest(prompt_ids=prompt, params=GenerationParams(max_new_tokens=4),
                                               steering=delta, steer_prompt=False))
    everywhere = first_pass(GenerationRequest(prompt_ids=prompt, params=GenerationParams(max_new_tokens=4), steering=delta))
    deep = tiny.num_layers - 1  # a layer after the steered ones: the residual carries the delta
    keys = [b.cache.layers[deep].keys for b in (plain, answer_only, everywhere)]
    assert torch.allclose(keys[1][..., :-1, :], keys[0][..., :-1, :], atol=1e-5)  # the prompt as read unsteered
    assert not torch.allclose(keys[1][..., -1, :], keys[0][..., -1, :], atol=1e-3)  # its last position steered
    assert not torch.allclose(keys[2][..., :-1, :], keys[0][..., :-1, :], atol=1e-3)  # the default steers it all

    def tokens(requests, **batch):
        out = [[] for _ in requests]
        for event in stream_batch(tiny, hooks, requests):
            if event.token_id is not None:
                out[event.index].append(event.token_id)
        return out

    def row(steer_prompt):
        return GenerationRequest(prompt_ids=prompt, params=GenerationParams(max_new_tokens=6), steering=delta,
                                 steer_prompt=steer_prompt)

    alone = [tokens([row(False)])[0], tokens([row(True)])[0]]
    assert tokens([row(False), row(True)]) == alone  # float32: each row as alone
