"""A generation resumed from the tokens it had already produced (`generated_ids`), as the
inference workers do when one dies mid-stream: the rest of the answer is the rest of the
uninterrupted one, greedy or seeded."""

import pytest

from steering.engine import GenerationParams, GenerationRequest, stream_batch
from tests.tiny_models import build_tiny


def _run(loaded, params, generated_ids=()):
    request = GenerationRequest(
        prompt_ids=loaded.chat_ids("tell me about the report"), params=GenerationParams(**params),
        generated_ids=list(generated_ids),
    )
    events = list(stream_batch(loaded, None, [request]))
    return [e.token_id for e in events if e.token_id is not None], [e.text for e in events], events[-1].finish


@pytest.mark.parametrize("params", [
    dict(max_new_tokens=24),
    dict(max_new_tokens=24, temperature=1.3, seed=11),
    dict(max_new_tokens=24, temperature=0.9, top_p=0.8, top_k=50, seed=3),
], ids=["greedy", "seeded", "seeded-top-p-k"])
def test_it_resumes_where_the_first_generation_stopped(params):
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()  # the whole length, so there is a middle to resume from
    whole_ids, whole_texts, finish = _run(loaded, params)
    assert finish == "length" and len(whole_ids) == 24
    for cut in (1, 9, 23):
        rest_ids, rest_texts, rest_finish = _run(loaded, params, generated_ids=whole_ids[:cut])
        assert whole_ids[:cut] + rest_ids == whole_ids  # and max_new_tokens counts the resumed tokens
        # What a client had been sent (one event a token) and the rest make the whole answer.
        assert "".join(whole_texts[:cut] + rest_texts) == "".join(whole_texts)
        assert rest_finish == "length"


@pytest.mark.parametrize("steer_prompt", [True, False], ids=["prompt-and-answer", "answer-only"])
def test_a_steered_answer_resumes_as_it_was_steered(steer_prompt):
    """The resumed answer's tokens are steered in its prefill as they were when generated, also
    when the set steers only the answer (its prompt then stays unsteered)."""
    import torch

    from steering.engine import SteeringHooks

    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    g = torch.Generator().manual_seed(5)
    delta = {layer: 4.0 * torch.randn(loaded.hidden_size, generator=g) for layer in (1, 2)}

    def run(generated_ids=()):
        request = GenerationRequest(
            prompt_ids=loaded.chat_ids("tell me about the report"), params=GenerationParams(max_new_tokens=16),
            steering=delta, steer_prompt=steer_prompt, generated_ids=list(generated_ids),
        )
        return [e.token_id for e in stream_batch(loaded, hooks, [request]) if e.token_id is not None]

    whole = run()
    assert whole != [e.token_id for e in stream_batch(loaded, None, [GenerationRequest(
        prompt_ids=loaded.chat_ids("tell me about the report"), params=GenerationParams(max_new_tokens=16))])
        if e.token_id is not None]  # the steering matters
    for cut in (1, 7):
        assert whole[:cut] + run(whole[:cut]) == whole
