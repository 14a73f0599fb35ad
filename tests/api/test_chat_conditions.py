"""Conditional steering through the doors, on the tiny site: a topical dimension's decision
comes back with the answer (REST, the websocket's done frame; /v1's steering echo in
tests/openai/test_steering_conditions.py), and staff's
threshold on the dimension decides it."""

import pytest
import torch

from steering.engine.conditions import Condition
from steering.models import PreferenceDimension
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors, tiny_chat as _chat
from tests.tiny_models import NUM_LAYERS
from tests.ws.conftest import connect, frames_until_end

pytestmark = pytest.mark.django_db(transaction=True)

TINY_HIDDEN = 64
NEVER = 1.01  # above any cosine: the calibrated threshold of a condition that never holds


def conditional_set_conditions() -> dict[str, Condition]:
    """cost's condition, which never holds by its own threshold."""
    direction = torch.nn.functional.normalize(torch.randn(TINY_HIDDEN, generator=torch.Generator().manual_seed(5)), dim=0)
    return {"cost": Condition(layer=1, direction=direction, center=torch.zeros(TINY_HIDDEN), threshold=NEVER)}


@pytest.fixture
def conditional_set(tiny_site, dimensions):
    """cost topical with a condition that never holds by its own threshold, formality a style."""
    PreferenceDimension.objects.filter(name="cost").update(kind=PreferenceDimension.Kind.TOPICAL)
    vectors = make_vectors(["formality", "cost"], model_id=runtime.site_model_id(), hidden=TINY_HIDDEN,
                           layers=NUM_LAYERS, range_=0.5)
    return vector_sets.vector_set_register(vectors=vectors.with_conditions(conditional_set_conditions()), name="shared")


def test_a_topical_dimension_that_does_not_apply_leaves_the_answer_and_says_so(as_alice, conditional_set):
    plain = _chat(as_alice).json()
    assert plain["conditions"] is None  # nothing topical asked for, nothing decided
    skipped = _chat(as_alice, preferences={"cost": 1.0}).json()
    assert skipped["conditions"]["cost"]["applied"] is False
    assert skipped["conditions"]["cost"]["threshold"] == NEVER
    assert -1 <= skipped["conditions"]["cost"]["score"] <= 1
    assert skipped["generated_text"] == plain["generated_text"]
    assert skipped["preferences_applied"] == {"cost": 1.0}  # the profile is unchanged; only this turn skipped it


def test_staffs_threshold_on_the_dimension_overrides_the_calibrated_one(as_alice, conditional_set):
    plain = _chat(as_alice).json()["generated_text"]
    PreferenceDimension.objects.filter(name="cost").update(condition_threshold=-1.0)  # every prompt passes
    applied = _chat(as_alice, preferences={"cost": 1.0}).json()
    assert applied["conditions"]["cost"] == {**applied["conditions"]["cost"], "applied": True, "threshold": -1.0}
    assert applied["generated_text"] != plain


def test_a_style_dimension_and_a_dimension_made_style_always_apply(as_alice, conditional_set):
    plain = _chat(as_alice).json()["generated_text"]
    formal = _chat(as_alice, preferences={"formality": 1.0}).json()
    assert formal["conditions"] is None and formal["generated_text"] != plain
    PreferenceDimension.objects.filter(name="cost").update(kind=PreferenceDimension.Kind.STYLE)
    cost = _chat(as_alice, preferences={"cost": 1.0}).json()
    assert cost["conditions"] is None and cost["generated_text"] != plain


async def test_the_websocket_done_frame_carries_the_decision(conditional_set, alice):
    communicator, connected, _ = await connect(alice)
    assert connected
    await communicator.send_json_to({"type": "generate", "prompt": "hello world", "max_new_tokens": 4,
                                     "temperature": 0, "preferences": {"cost": 1.0, "formality": 0.5}})
    done = (await frames_until_end(communicator))[-1]
    assert done["type"] == "done", done
    assert list(done["stats"]["conditions"]) == ["cost"] and done["stats"]["conditions"]["cost"]["applied"] is False
    await communicator.disconnect()


def test_a_set_that_steers_only_the_answer_is_served_so(as_alice, tiny_site, dimensions):
    """The set's prompt policy reaches the engine from the chat turn, and changes the answer."""
    from steering.serving.backends import GenerationSpec

    vectors = make_vectors(["formality"], model_id=runtime.site_model_id(), hidden=TINY_HIDDEN, layers=NUM_LAYERS,
                           range_=0.1)
    both = vector_sets.vector_set_register(vectors=vectors.with_steer_prompt(True), name="prompt-and-answer")
    answer = vector_sets.vector_set_register(vectors=vectors.with_steer_prompt(False), name="answer-only")
    ids = runtime.site_model().chat_ids("hello world")
    for vector_set, expected in ((both, True), (answer, False)):
        spec = GenerationSpec(prompt_ids=ids, vector_set_id=vector_set.pk, strengths={"formality": 1.0})
        assert spec.to_request().steer_prompt is expected
    texts = [_chat(as_alice, preferences={"formality": 1.0}, vector_set=vs.pk).json()["generated_text"] for vs in (both, answer)]
    plain = _chat(as_alice, vector_set=answer.pk).json()["generated_text"]
    assert texts[0] != texts[1] and texts[1] != plain


def test_a_worded_dimension_is_said_in_words_only_on_a_turn_it_applies_to(as_alice, conditional_set):
    """Gated prompt + steering (VectorSet.worded_dimensions): cost's words reach the prompt only
    when its condition holds, and then the turn is the ungated "prompt with steering" one."""
    from steering.models import VectorSet

    # Gentle steering, so that the tiny model's answer still shows what the words change.
    gentle = vector_sets.vector_set_register(
        vectors=make_vectors(["formality", "cost"], model_id=runtime.site_model_id(), hidden=TINY_HIDDEN,
                             layers=NUM_LAYERS, range_=0.01).with_conditions(conditional_set_conditions()),
        name="gentle")
    VectorSet.objects.filter(pk=gentle.pk).update(worded_dimensions=["cost"])
    plain = _chat(as_alice, vector_set=gentle.pk).json()["generated_text"]
    skipped = _chat(as_alice, preferences={"cost": 1.0}, vector_set=gentle.pk).json()
    assert skipped["conditions"]["cost"]["applied"] is False and skipped["generated_text"] == plain
    PreferenceDimension.objects.filter(name="cost").update(condition_threshold=-1.0)  # every prompt passes
    worded = _chat(as_alice, preferences={"cost": 1.0}, vector_set=gentle.pk).json()
    assert worded["conditions"]["cost"]["applied"] is True
    VectorSet.objects.filter(pk=gentle.pk).update(worded_dimensions=[])
    steered_only = _chat(as_alice, preferences={"cost": 1.0}, vector_set=gentle.pk).json()["generated_text"]
    VectorSet.objects.filter(pk=gentle.pk).update(prompt_with_steering=True)
    ungated = _chat(as_alice, preferences={"cost": 1.0}, vector_set=gentle.pk).json()["generated_text"]
    assert worded["generated_text"] == ungated != steered_only


def test_a_worded_turn_travels_to_a_worker_as_plain_data_without_words(as_alice, conditional_set, alice):
    """Worker mode: the spec carries the prompt without words and what to say, and the worker's
    request words it once the conditions are read; the prompt fits the context with every word."""
    import json

    from steering.chat.turn import chat_prepare
    from steering.engine import GenerationParams
    from steering.models import VectorSet
    from steering.serving.backends import GenerationSpec

    VectorSet.objects.filter(pk=conditional_set.pk).update(worded_dimensions=["cost", "formality"])
    plan = chat_prepare(user=alice, prompt="hello world", preferences={"cost": 1.0, "formality": -0.5},
                        vector_set_id=conditional_set.pk, params={"max_new_tokens": 4})
    loaded = runtime.site_tokenizer()
    assert plan.prompt_ids == loaded.chat_ids("hello world")
    cost, formality = (PreferenceDimension.objects.get(name=name, private_to=None).words() for name in ("cost", "formality"))
    assert plan.worded.ends == {"cost": (*cost, 1.0), "formality": (*formality, -0.5)}
    assert plan.worded.tokens == len(loaded.chat_ids("hello world", system=plan.worded.instruction(["cost", "formality"])))
    spec = GenerationSpec(prompt_ids=plan.prompt_ids, params=GenerationParams(max_new_tokens=4),
                          vector_set_id=conditional_set.pk, strengths=plan.strengths, worded=plan.worded)
    again = GenerationSpec(**json.loads(spec.to_json()))
    assert again.worded == plan.worded
    request = again.to_request()
    assert request.worded == plan.worded and request.prompt_tokens == plan.worded.tokens
    # Without the set's words the plan is the plain one.
    VectorSet.objects.filter(pk=conditional_set.pk).update(worded_dimensions=[])
    assert chat_prepare(user=alice, prompt="hello world", preferences={"cost": 1.0}, vector_set_id=conditional_set.pk,
                        params={}).worded is None
