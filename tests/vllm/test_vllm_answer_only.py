"""Answer-only steering on vLLM (`GenerationRequest.steer_prompt` False): the prompt is read
unsteered but for its last position, the answer steered, as on the builtin engine, also when
the prompt is prefilled in chunks, partly served from the prefix cache, or resumed."""

from __future__ import annotations

import pytest
import torch

from tests.vllm.conftest import SKIP_REASON

pytest.importorskip("vllm", reason=SKIP_REASON)

from steering.engine import SteeringHooks, stream_batch  # noqa: E402
from tests.vllm.test_vllm_steering import PROMPTS, builtin_logprobs, request, run  # noqa: E402

pytestmark = pytest.mark.slow


def token_ids(ticket) -> list[int]:
    return [e.token_id for e in ticket if e.token_id is not None and e.finish != "stop"]


def builtin_tokens(loaded, req) -> list[int]:
    hooks = SteeringHooks(loaded.layers, sorted(req.steering))
    try:
        return [e.token_id for e in stream_batch(loaded, hooks, [req]) if e.token_id is not None and e.finish != "stop"]
    finally:
        hooks.remove()


def assert_matches(logprobs: dict[int, float], expected: torch.Tensor) -> None:
    assert len(logprobs) >= 20
    for token, logprob in logprobs.items():
        assert logprob == pytest.approx(float(expected[token]), abs=2e-3), token
    assert max(logprobs, key=logprobs.get) == int(expected.argmax())


def test_an_answer_only_request_is_steered_as_on_the_builtin_engine(vllm_scheduler, loaded, steering_for):
    steering, prompt = steering_for(7), PROMPTS[6]
    ids = loaded.chat_ids(prompt)
    answer_only, everywhere = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=1, steer_prompt=False),
                                                   request(loaded, prompt, steering, tokens=1)], logprobs=20)
    expected = builtin_logprobs(loaded, ids, steering, steer_prompt=False)
    assert_matches(answer_only.logprobs[0], expected)
    assert_matches(everywhere.logprobs[0], builtin_logprobs(loaded, ids, steering))
    # Steering only the answer is neither steering everything nor nothing.
    assert (expected - builtin_logprobs(loaded, ids, steering)).abs().max() > 0.1
    assert (expected - builtin_logprobs(loaded, ids, {})).abs().max() > 0.1
    # Greedy: the builtin engine's tokens, and not those of the prompt steered too.
    [greedy] = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=16, steer_prompt=False)])
    tokens = token_ids(greedy)
    assert tokens == builtin_tokens(loaded, request(loaded, prompt, steering, tokens=16, steer_prompt=False))
    assert tokens != token_ids(run(vllm_scheduler, [request(loaded, prompt, steering, tokens=16)])[0])


def test_an_answer_only_prompt_prefilled_in_chunks_reads_as_in_one_pass(vllm_scheduler, loaded, steering_for):
    steering, prompt = steering_for(8), PROMPTS[7]
    ids = loaded.chat_ids(prompt)
    whole = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=12, steer_prompt=False)], logprobs=20)[0]
    core = vllm_scheduler.engine.engine_core.engine_core.scheduler
    budget, core.max_num_scheduled_tokens = core.max_num_scheduled_tokens, 8  # tokens per pass
    passes = vllm_scheduler.runner_state()[0]["passes"]
    try:
        vllm_scheduler.engine.reset_prefix_cache()
        chunked = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=12, steer_prompt=False)],
                      logprobs=20)[0]
    finally:
        core.max_num_scheduled_tokens = budget
    assert vllm_scheduler.runner_state()[0]["passes"] - passes >= -(-len(ids) // 8) + 11, "the prompt took several passes"
    assert chunked.text == whole.text
    assert_matches(chunked.logprobs[0], builtin_logprobs(loaded, ids, steering, steer_prompt=False))


def test_an_answer_only_prompt_served_from_the_prefix_cache_starts_where_it_left(vllm_scheduler, loaded, steering_for):
    """The second request's pass starts past the cached blocks (128 tokens each on the CPU
    backend): its positions, not the pass's, say which tokens are steered. Its cache is its own:
    neither an unsteered request nor one steering its prompt reads it."""
    prompt = " ".join(PROMPTS * 4) + " Pick one of these questions and answer it."
    ids = loaded.chat_ids(prompt)
    steering = steering_for(9)
    vllm_scheduler.engine.reset_prefix_cache()
    first = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=8, steer_prompt=False)], logprobs=20)[0]
    again = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=8, steer_prompt=False)], logprobs=20)[0]
    assert again.cached_tokens >= 256
    assert again.text == first.text
    expected = builtin_logprobs(loaded, ids, steering, steer_prompt=False)
    assert_matches(first.logprobs[0], expected)
    assert_matches(again.logprobs[0], expected)
    others = run(vllm_scheduler, [request(loaded, prompt, tokens=2), request(loaded, prompt, steering, tokens=2)])
    assert [t.cached_tokens for t in others] == [0, 0]


def test_a_resumed_answer_only_request_goes_on_as_it_was_steered(vllm_scheduler, loaded, steering_for):
    """A resumed answer's tokens (prefilled after the prompt) are steered, as when generated:
    the resumed request ends as the uninterrupted one, on vLLM as on the builtin engine."""
    steering, prompt = steering_for(10), PROMPTS[0]
    full = token_ids(run(vllm_scheduler, [request(loaded, prompt, steering, tokens=14, steer_prompt=False)])[0])
    assert len(full) == 14
    resumed = request(loaded, prompt, steering, tokens=14, steer_prompt=False, generated_ids=full[:6])
    assert token_ids(run(vllm_scheduler, [resumed])[0]) == full[6:]
    assert builtin_tokens(loaded, resumed) == full[6:]
