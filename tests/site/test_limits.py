"""Every door bounds a request by the engine's one table (steering.engine.LIMITS): what the
REST and websocket schema, /v1's parser and the engine accept is the same, parameter by
parameter and for strengths, so no door lets through what the engine would then refuse."""

import pytest

from steering.chat.native import ChatRequestSerializer
from steering.engine import LIMITS, MAX_DIMENSIONS, GenerationParams
from steering.models import VectorSet, clean_preferences
from steering.chat.openai.protocol import OpenAIError, parse_request

# What both APIs name the way the engine does (/v1 takes OpenAI's names for the token count).
SHARED = ("temperature", "top_p", "seed")


def rest(**fields):
    form = ChatRequestSerializer(data={"prompt": "hi", **fields})
    return form.is_valid(), form.errors


def v1(**fields):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_request(body, max_prompt_chars=1000, max_messages=32, max_new_tokens=64, default_new_tokens=16)


def past(name):
    limit = LIMITS[name]
    return int(limit.high) + 1 if limit.integer else limit.high + 0.01


def at(name):
    limit = LIMITS[name]
    return int(limit.high) if limit.integer else limit.high


@pytest.mark.parametrize("name", [n for n in sorted(LIMITS) if n != "max_new_tokens"])
def test_the_rest_schema_takes_each_parameter_up_to_the_engines_bound_and_no_further(name):
    assert rest(**{name: at(name)})[0]
    ok, errors = rest(**{name: past(name)})
    assert not ok and name in errors
    GenerationParams(**{name: at(name)})


@pytest.mark.parametrize("name", SHARED)
def test_v1_takes_each_parameter_up_to_the_engines_bound_and_no_further(name):
    assert v1(**{name: at(name)}).params[name] == at(name)
    with pytest.raises(OpenAIError) as refused:
        v1(**{name: past(name)})
    assert refused.value.param == name


def test_top_p_zero_is_refused_by_every_door():
    assert not rest(top_p=0)[0]
    with pytest.raises(OpenAIError):
        v1(top_p=0)
    with pytest.raises(ValueError):
        GenerationParams(top_p=0)


@pytest.mark.django_db
@pytest.mark.parametrize("value,allowed", [(1.0, True), (-1.0, True), (1.01, False), (-2, False), (float("nan"), False)])
def test_a_strength_is_checked_the_same_by_every_door(value, allowed, make_tone_set):
    vector_set = make_tone_set()
    results = [rest(preferences={"tone": value})[0]]
    try:
        v1(steering={"preferences": {"tone": value}})
        results.append(True)
    except OpenAIError:
        results.append(False)
    try:
        clean_preferences(vector_set, {"tone": value})
        results.append(True)
    except ValueError:
        results.append(False)
    assert results == [allowed] * 3


def test_the_dimension_cap_is_the_same_for_both_apis():
    many = {f"d{i}": 0.1 for i in range(MAX_DIMENSIONS + 1)}
    ok, errors = rest(preferences=many)
    assert not ok and "preferences" in errors
    with pytest.raises(OpenAIError):
        v1(steering={"preferences": many})
    assert rest(preferences=dict(list(many.items())[:MAX_DIMENSIONS]))[0]


@pytest.fixture
def make_tone_set():
    from steering.models import PreferenceDimension

    def make():
        tone = PreferenceDimension.objects.create(name="tone", negative_label="Casual", positive_label="Formal")
        vector_set = VectorSet.objects.create(name="t", model_id="m")
        vector_set.dimensions.add(tone)
        return vector_set

    return make
