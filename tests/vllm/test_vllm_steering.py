"""vLLM with SteerLab's per-request steering, on the embedded SmolLM2 (float32, eager, CPU).

Ground truth is the builtin engine on the same weights: the same deltas at the same hook point
(the output of decoder layer l) must give the same first-step distribution."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from tests.vllm.conftest import ROWS, SKIP_REASON

pytest.importorskip("vllm", reason=SKIP_REASON)

from steering.engine import GenerationParams, GenerationRequest, RowSteering, SteeringHooks, stream_batch  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = [
    "Describe a relaxing weekend in a new city.",
    "How should I plan a dinner for friends?",
    "Write a short guide to packing for a trip.",
    "What should I know before buying a used car?",
    "Explain how to start a vegetable garden.",
    "Give advice for a first job interview.",
    "Describe a good morning routine.",
    "How do I choose a gift for a colleague?",
]


def request(loaded, prompt: str, steering=None, tokens: int = 24, **fields) -> GenerationRequest:
    return GenerationRequest(prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=tokens),
                             steering=steering or {}, **fields)


def run(scheduler, requests, **kwargs):
    """Submit all at once (one batch), wait for all; the finished tickets."""
    tickets = [scheduler.submit(r, **kwargs) for r in requests]
    for ticket in tickets:
        assert ticket.wait(300), "a generation did not finish in 300 s"
        assert ticket.finish in ("stop", "length"), (ticket.finish, ticket.error)
    return tickets


def builtin_logprobs(loaded, prompt_ids, steering, *, steer_prompt: bool = True) -> torch.Tensor:
    """The builtin engine's first-step log-probabilities; `steer_prompt=False` weights the
    prompt's columns as `DecodeBatch._prompt_columns` does (0, but 1 on the last)."""
    hooks = SteeringHooks(loaded.layers, sorted(steering))
    try:
        rows = RowSteering.from_rows([steering], dtype=loaded.dtype, device=loaded.device)
        if rows is not None and not steer_prompt:
            columns = torch.zeros(1, len(prompt_ids))
            columns[:, -1] = 1.0
            rows = rows.on_columns(columns)
        with torch.inference_mode(), hooks.active(rows):
            logits = loaded.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    finally:
        hooks.remove()
    return logits.float().log_softmax(-1)


@pytest.mark.parametrize("seed", [None, 3])
def test_first_step_distribution_matches_the_builtin_engine(vllm_scheduler, loaded, steering_for, seed):
    steering = {} if seed is None else steering_for(seed)
    prompt = PROMPTS[0]
    [ticket] = run(vllm_scheduler, [request(loaded, prompt, steering, tokens=1)], logprobs=20)
    expected = builtin_logprobs(loaded, loaded.chat_ids(prompt), steering)
    got = ticket.logprobs[0]
    assert len(got) >= 20
    for token, logprob in got.items():
        assert logprob == pytest.approx(float(expected[token]), abs=2e-3), token
    # The top token is the builtin engine's argmax, and steering changed the distribution.
    assert max(got, key=got.get) == int(expected.argmax())
    if seed is not None:
        unsteered = builtin_logprobs(loaded, loaded.chat_ids(prompt), {})
        assert (unsteered - expected).abs().max() > 0.1


def test_steering_moves_the_text(vllm_scheduler, loaded, steering_for):
    plain, steered = run(vllm_scheduler, [request(loaded, PROMPTS[1]), request(loaded, PROMPTS[1], steering_for(5))])
    assert plain.text and steered.text
    assert plain.text != steered.text
    [rank] = vllm_scheduler.runner_state()  # one rank: the model runs in this process
    assert rank["steered_passes"] > 0


def test_a_request_alone_gives_the_text_it_gives_in_a_mixed_batch_of_8(vllm_scheduler, loaded, steering_for):
    requests = [request(loaded, PROMPTS[i], steering_for(100 + i) if i % 4 else {}) for i in range(8)]
    alone = [run(vllm_scheduler, [r])[0].text for r in requests]
    together = [t.text for t in run(vllm_scheduler, requests)]
    assert together == alone
    assert len(set(alone)) == 8


def test_two_users_never_see_each_others_steering(vllm_scheduler, loaded, steering_for):
    """The same prompt for two users in one batch, one steered one way, one another way:
    each gets the text of its own steering alone, and the unsteered user's text stays plain."""
    prompt = PROMPTS[2]
    mine, theirs = steering_for(11), steering_for(12)
    solo = {name: run(vllm_scheduler, [request(loaded, prompt, s)])[0].text
            for name, s in (("mine", mine), ("theirs", theirs), ("plain", {}))}
    a, b, c = run(vllm_scheduler, [request(loaded, prompt, mine), request(loaded, prompt, theirs),
                                   request(loaded, prompt)])
    assert (a.text, b.text, c.text) == (solo["mine"], solo["theirs"], solo["plain"])
    assert len(set(solo.values())) == 3


def test_cancel_frees_the_row(vllm_scheduler, loaded, steering_for):
    assert vllm_scheduler.table.free_rows == ROWS
    ticket = vllm_scheduler.submit(request(loaded, PROMPTS[3], steering_for(21), tokens=400))
    first = ticket.get(timeout=120)
    assert first is not None and first.finish is None
    assert vllm_scheduler.table.free_rows == ROWS - 1
    ticket.cancel()
    assert ticket.wait(60)
    assert ticket.finish == "cancelled"
    assert ticket.tokens < 400
    assert vllm_scheduler.table.free_rows == ROWS
    assert vllm_scheduler.stats().active_rows == 0
    run(vllm_scheduler, [request(loaded, PROMPTS[3], tokens=1)])  # the runner hears of the end with the next batch
    [rank] = vllm_scheduler.runner_state()
    assert rank["bound"] == 0 and rank["nonzero_rows"] == [], "a freed row keeps no vector behind"


def test_a_full_table_makes_requests_wait_not_run_unsteered(vllm_scheduler, loaded, steering_for):
    steering = steering_for(31)
    expected = run(vllm_scheduler, [request(loaded, PROMPTS[4], steering)])[0].text
    plain = run(vllm_scheduler, [request(loaded, PROMPTS[4])])[0].text
    assert expected != plain
    # Fill every row, as if ROWS other steered users were generating.
    held = [vllm_scheduler.table.allocate(steering_for(1000 + i)) for i in range(ROWS)]
    try:
        ticket = vllm_scheduler.submit(request(loaded, PROMPTS[4], steering))
        assert not ticket.wait(3), "a steered request ran without a row"
        assert ticket.tokens == 0 and vllm_scheduler.stats().waiting == 1
    finally:
        for row in held:
            vllm_scheduler.table.free(row)
    with vllm_scheduler._lock:
        vllm_scheduler._lock.notify_all()
    assert ticket.wait(120)
    assert ticket.text == expected  # it ran steered, once a row was free


def test_prefix_cache_keeps_two_steerings_of_one_prompt_apart(vllm_scheduler, loaded, steering_for):
    # Only whole blocks are cached (128 tokens on the CPU backend): a prompt of several.
    prompt = " ".join(PROMPTS * 4) + " Pick one of these questions and answer it."
    assert len(loaded.chat_ids(prompt)) > 300
    a, b = steering_for(41), steering_for(42)
    vllm_scheduler.engine.reset_prefix_cache()
    first_a = run(vllm_scheduler, [request(loaded, prompt, a)], logprobs=5)[0]
    again_a = run(vllm_scheduler, [request(loaded, prompt, a)])[0]
    then_b = run(vllm_scheduler, [request(loaded, prompt, b)], logprobs=5)[0]
    plain = run(vllm_scheduler, [request(loaded, prompt)])[0]
    assert again_a.cached_tokens > 0, "the same steering shares its cached prefix"
    assert then_b.cached_tokens == 0, "another steering must not reuse A's keys and values"
    assert plain.cached_tokens == 0, "nor may an unsteered request"
    assert again_a.text == first_a.text
    vllm_scheduler.engine.reset_prefix_cache()
    fresh_b = run(vllm_scheduler, [request(loaded, prompt, b)])[0]
    assert then_b.text == fresh_b.text != first_a.text
    expected = builtin_logprobs(loaded, loaded.chat_ids(prompt), b)
    for token, logprob in then_b.logprobs[0].items():
        assert logprob == pytest.approx(float(expected[token]), abs=2e-3)


def test_limits_and_refusals_are_the_schedulers(vllm_scheduler, loaded):
    from steering.inference import TooManyForUser

    with pytest.raises(ValueError, match="layer 99"):
        vllm_scheduler.submit(request(loaded, PROMPTS[0], {99: torch.zeros(loaded.hidden_size)}))
    with pytest.raises(ValueError, match="shape"):
        vllm_scheduler.submit(request(loaded, PROMPTS[0], {3: torch.zeros(7)}))
    limit, vllm_scheduler.max_per_user = vllm_scheduler.max_per_user, 1
    try:
        first = vllm_scheduler.submit(request(loaded, PROMPTS[0], tokens=200), user="u1")
        with pytest.raises(TooManyForUser):
            vllm_scheduler.submit(request(loaded, PROMPTS[0]), user="u1")
        first.cancel()
        assert first.wait(60)
    finally:
        vllm_scheduler.max_per_user = limit


async def test_the_service_streams_token_and_done_events(vllm_scheduler, loaded):
    """The inference service's own generator (local backend and worker alike) over vLLM."""
    from steering.serving.backends import GenerationSpec, run_on_scheduler

    spec = GenerationSpec(prompt_ids=loaded.chat_ids(PROMPTS[5]), params={"max_new_tokens": 12}, user="svc")
    events = [e async for e in run_on_scheduler(vllm_scheduler, spec, asyncio.Event())]
    assert events[-1]["type"] == "done" and events[-1]["tokens"] >= 1
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text == run(vllm_scheduler, [request(loaded, PROMPTS[5], tokens=12)])[0].text
    # Cancellation through the service: the row is freed and the stream ends "cancelled".
    cancelled = asyncio.Event()
    spec = GenerationSpec(prompt_ids=loaded.chat_ids(PROMPTS[5]), params={"max_new_tokens": 400}, user="svc")
    events = []
    async for event in run_on_scheduler(vllm_scheduler, spec, cancelled):
        events.append(event)
        if len(events) == 2:
            cancelled.set()
    assert events[-1] == {**events[-1], "type": "done", "finish": "cancelled"}
    assert vllm_scheduler.stats().active_rows == 0


def test_a_worded_request_is_worded_for_every_dimension_since_vllm_reads_no_conditions(vllm_scheduler, loaded, steering_for):
    """vLLM applies a request's topical dimensions unconditionally (its prefill is not ours to
    read first), so their words too: the text is that of the prompt with every word."""
    from steering.engine.conditions import Condition, ConditionalSteering
    from steering.engine.prompting import WordedPrompt

    never = Condition(layer=1, direction=torch.ones(loaded.hidden_size) / loaded.hidden_size ** 0.5,
                      center=torch.zeros(loaded.hidden_size), threshold=1.01)
    worded = WordedPrompt([{"role": "user", "content": PROMPTS[1]}], {"cost": ("luxury", "thrift", 1.0)})
    conditional = request(loaded, PROMPTS[1], conditions=ConditionalSteering({"cost": (never, steering_for(5))}),
                          worded=worded)
    said = request(loaded, PROMPTS[1], steering_for(5))
    said.prompt_ids = loaded.chat_ids(PROMPTS[1], system="Answer for someone who strongly prefers luxury.")
    got, expected = run(vllm_scheduler, [conditional]), run(vllm_scheduler, [said])
    assert conditional.words == ["cost"] and got[0].text == expected[0].text
