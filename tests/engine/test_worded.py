"""Gated prompt + steering in the engine (prompting.WordedPrompt): a worded dimension's words
reach a row's prompt only where its condition applies, decided on the prompt without words, in
one batch, each row as alone."""

import pytest

from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, stream_batch
from steering.engine.conditions import ConditionalSteering
from steering.engine.prompting import WordedPrompt
from tests.engine.test_conditions import OFF, ON, _condition, _delta, _tokens

ENDS = {"topic": ("luxury", "thrift", 1.0)}


def _worded(loaded, prompt, *, condition=None, topical=None, ends=ENDS):
    worded = WordedPrompt([{"role": "user", "content": prompt}], ends)
    conditions = ConditionalSteering({"topic": (condition, topical)}) if condition is not None else None
    return GenerationRequest(prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=8),
                             steering={} if condition is not None else topical or {}, conditions=conditions,
                             worded=worded)


def _plain(loaded, prompt, *, system=None, steering=None):
    return GenerationRequest(prompt_ids=loaded.chat_ids(prompt, system=system), params=GenerationParams(max_new_tokens=8),
                             steering=steering or {})


def test_words_reach_only_the_row_whose_condition_applies_each_as_alone(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    condition, topical = _condition(tiny), _delta(tiny, 1)
    batch = [_worded(tiny, ON, condition=condition, topical=topical), _worded(tiny, OFF, condition=condition, topical=topical)]
    got = _tokens(tiny, hooks, batch)
    assert [r.words for r in batch] == [["topic"], []]
    words = "Answer for someone who strongly prefers luxury."
    assert batch[0].prompt_ids == tiny.chat_ids(ON, system=words)  # rendered with the words after the decision
    assert batch[1].prompt_ids == tiny.chat_ids(OFF)
    # The decision was read on the prompt without words: the same score as a request without any.
    unworded = GenerationRequest(prompt_ids=tiny.chat_ids(ON), params=GenerationParams(max_new_tokens=8),
                                 conditions=ConditionalSteering({"topic": (condition, topical)}))
    _tokens(tiny, hooks, [unworded])
    assert batch[0].conditions.decision["topic"].score == pytest.approx(unworded.conditions.decision["topic"].score, abs=1e-5)
    # Each row's answer is the plain request it amounts to: words and steering, or neither.
    assert got[0] == _tokens(tiny, hooks, [_plain(tiny, ON, system=words, steering=topical)])[0]
    assert got[1] == _tokens(tiny, hooks, [_plain(tiny, OFF)])[0]


def test_a_worded_dimension_without_a_condition_is_worded_on_every_prompt(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    requests = [_worded(tiny, prompt, topical=_delta(tiny, 1)) for prompt in (ON, OFF)]
    _tokens(tiny, hooks, requests)
    assert [r.words for r in requests] == [["topic"], ["topic"]]


def test_words_are_applied_once_and_the_scheduler_counts_the_longest_prompt(tiny):
    request = _worded(tiny, ON, topical=_delta(tiny, 1))
    longest = len(tiny.chat_ids(ON, system=request.worded.instruction(ENDS)))
    request.worded.tokens = longest
    assert request.prompt_tokens == longest > len(request.prompt_ids)
    request.apply_words(tiny)
    worded = list(request.prompt_ids)
    assert len(worded) == longest
    request.apply_words(tiny)  # a second batch (none in practice) does not word it twice
    assert request.prompt_ids == worded


def test_a_weak_strength_has_no_words_and_several_are_said_in_name_order():
    worded = WordedPrompt([], {"time": ("evenings", "mornings", -1.0), "age": ("adults", "kids", 0.1),
                               "cost": ("luxury", "thrift", 0.5)})
    assert worded.instruction(["time", "age", "cost"]) == (
        "Answer for someone who somewhat prefers luxury. Answer for someone who strongly prefers mornings.")
    assert worded.instruction(["age"]) is None and worded.instruction([]) is None


def test_a_worded_prompt_survives_json_as_plain_data():
    import json

    worded = WordedPrompt([{"role": "user", "content": "hi"}], {"cost": ("luxury", "thrift", 1.0)}, tokens=12)
    from dataclasses import asdict

    again = WordedPrompt(**json.loads(json.dumps(asdict(worded))))
    assert again == worded and again.ends["cost"] == ("luxury", "thrift", 1.0)


def test_stream_batch_words_a_request_built_by_steered_request(tiny, tmp_path):
    """The evaluations' and the bench's path (request.steered_request) carries the words."""
    from steering.engine.request import steered_request
    from tests.api.conftest import make_vectors

    vectors = make_vectors(["cost"], model_id="tiny", hidden=tiny.hidden_size, layers=tiny.num_layers, range_=0.1)
    worded = WordedPrompt([{"role": "user", "content": ON}], {"cost": ("luxury", "thrift", 1.0)})
    request = steered_request(vectors, tiny.chat_ids(ON), {"cost": 1.0}, worded=worded)
    hooks = SteeringHooks(tiny.layers, vectors.layers)
    list(stream_batch(tiny, hooks, [request]))
    assert request.words == ["cost"]
    none = steered_request(vectors, tiny.chat_ids(ON), {"cost": 1.0}, worded=WordedPrompt([], {}))
    assert none.worded is None  # nothing to say: the plain path
