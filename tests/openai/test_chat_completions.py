"""/v1/chat/completions and /v1/models through the official `openai` package and a plain
HTTP client, against a live daphne server running the tiny model (the protocol: shapes,
framing, errors, auth, limits, logging, cancellation)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2 as httpx  # the HTTP client the pinned openai package itself uses
import openai
import pytest

from steering.models import InteractionLog
from steering.serving import runtime
from tests.openai.conftest import token_for

MESSAGES = [{"role": "user", "content": "Say something about coffee."}]


def served_model():
    return runtime.site_model_id()


def test_it_answers_a_chat_completion(tiny_set, alice, alice_key, client_for):
    client = client_for(alice_key)
    reply = client.chat.completions.create(
        model=served_model(), messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
        max_tokens=6, temperature=0, user="end-user-7",
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # The extension field is kept by the SDK's models as an extra attribute.
    steering = reply.model_extra["steering"]
    assert steering["vector_set"] == tiny_set.pk and steering["preferences_applied"] == {}
    log = InteractionLog.objects.get(pk=steering["interaction_id"])
    assert log.source == "openai" and log.user == alice and log.session_id == "end-user-7"
    assert log.response == reply.choices[0].message.content and log.status == "ok"


def test_it_streams_role_deltas_finish_usage_and_done(tiny_set, alice_key, client_for):
    client = client_for(alice_key)
    stream = client.chat.completions.create(
        model=served_model(), messages=MESSAGES, max_completion_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
        extra_body={"steering": {"preferences": {"formality": 1}}},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["steering"]["preferences_applied"] == {"formality": 1.0}
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 8
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    greedy = client.chat.completions.create(
        model=served_model(), messages=MESSAGES, max_tokens=8, temperature=0,
        extra_body={"steering": {"preferences": {"formality": 1}}},
    )
    assert text == greedy.choices[0].message.content


def test_it_frames_server_sent_events(tiny_set, alice_key, live):
    body = {"model": served_model(), "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{live}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {alice_key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes()).decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ") and "\n" not in event
        assert json.loads(event[len("data: "):])["object"] == "chat.completion.chunk"


async def test_it_answers_the_async_client(tiny_set, alice_key, live):
    client = openai.AsyncOpenAI(base_url=f"{live}/v1", api_key=alice_key, max_retries=0, timeout=120)
    reply = await client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=4, temperature=0)
    stream = await client.chat.completions.create(
        model=served_model(), messages=MESSAGES, max_tokens=4, temperature=0, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == reply.choices[0].message.content
    await client.close()


def test_it_lists_the_model_and_one_entry_per_usable_set(tiny_set, alice, bob, alice_key, client_for):
    from tests.api.conftest import make_vectors
    from steering.services import vector_sets

    loaded = runtime.site_model()
    private = vector_sets.vector_set_register(
        vectors=make_vectors(["formality"], hidden=loaded.hidden_size, layers=loaded.num_layers), name="bobs", owner=bob
    )
    ids = [m.id for m in client_for(alice_key).models.list()]
    assert ids == [served_model(), "steerlab/tiny-default"]
    bob_ids = [m.id for m in client_for(token_for(bob)).models.list()]
    assert "steerlab/bobs" in bob_ids
    # Passing an entry as the model selects its set; another user's set is an unknown model.
    reply = client_for(token_for(bob)).chat.completions.create(model="steerlab/bobs", messages=MESSAGES, max_tokens=2)
    assert reply.model_extra["steering"]["vector_set"] == private.pk
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(alice_key).chat.completions.create(model="steerlab/bobs", messages=MESSAGES, max_tokens=2)
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    "change, param",
    [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"extra_body": {"steering": {"preferences": {"formality": 2}}}}, "steering.preferences.formality"),
        ({"extra_body": {"steering": {"vector_set": "x"}}}, "steering.vector_set"),
    ],
)
def test_it_refuses_bad_input_in_openai_shape(tiny_set, alice_key, client_for, change, param):
    request = {"model": served_model(), "messages": MESSAGES, "max_tokens": 2, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(alice_key).chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["param"] == param
    assert caught.value.body["message"]
    assert not InteractionLog.objects.exists()


def test_it_refuses_an_unknown_dimension_or_set(tiny_set, alice_key, client_for):
    client = client_for(alice_key)
    with pytest.raises(openai.BadRequestError, match="nknown dimension"):
        client.chat.completions.create(model=served_model(), messages=MESSAGES,
                                       extra_body={"steering": {"preferences": {"nope": 1}}})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=served_model(), messages=MESSAGES,
                                       extra_body={"steering": {"vector_set": 99999}})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert not InteractionLog.objects.exists()


def test_it_requires_a_valid_bearer_token(tiny_set, live, client_for):
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for("0" * 40).models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    response = httpx.post(f"{live}/v1/chat/completions", json={"model": "x", "messages": MESSAGES}, timeout=60)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_it_shares_the_chat_throttle(tiny_set, alice_key, client_for, settings):
    # The per-user budget the REST chat and the websocket spend: one budget for every door.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "chat": "1/hour"},
    }
    client_for(alice_key).chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(alice_key).chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=1)
    assert int(caught.value.response.headers["Retry-After"]) > 0
    assert caught.value.body["type"] == "rate_limit_error"


def test_a_user_over_the_concurrent_limit_gets_429(tiny_set, alice_key, client_for, live, settings, slow_decode):
    body = {"model": served_model(), "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {alice_key}"}
    limit = runtime.site_scheduler().max_per_user
    held = [httpx.stream("POST", f"{live}/v1/chat/completions", json=body, timeout=60, headers=headers)
            for _ in range(limit)]
    try:
        for stream in held:
            assert stream.__enter__().status_code == 200
        with pytest.raises(openai.RateLimitError) as caught:
            client_for(alice_key).chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=2)
        assert caught.value.response.headers.get("Retry-After") and caught.value.body["code"] == "rate_limit_exceeded"
    finally:
        for stream in held:
            stream.__exit__(None, None, None)
    assert not InteractionLog.objects.filter(status="failed").exists()  # a refusal is not a failure


def test_it_answers_503_when_the_queue_is_full(tiny_set, alice_key, bob_key, client_for, live, slow_decode):
    scheduler = runtime.site_scheduler()
    limit = scheduler.max_queue
    scheduler.max_queue = 1
    try:
        body = {"model": served_model(), "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{live}/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {bob_key}"}) as held:
            assert held.status_code == 200
            with pytest.raises(openai.InternalServerError) as caught:
                client_for(alice_key).chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=2)
            assert caught.value.status_code == 503 and caught.value.response.headers.get("Retry-After")
    finally:
        scheduler.max_queue = limit


def test_it_cuts_at_a_stop_sequence(tiny_set, alice_key, client_for):
    client = client_for(alice_key)
    full = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=12, temperature=0)
    text = full.choices[0].message.content
    assert len(text) > 4
    stop = text[3:5]
    cut = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=12, temperature=0, stop=stop)
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=12, temperature=0,
                                              stop=[stop], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.index(stop)]
    log = InteractionLog.objects.get(pk=cut.model_extra["steering"]["interaction_id"])
    assert log.response == text[: text.index(stop)] and log.status == "ok"


def test_it_samples_with_a_seed_reproducibly(tiny_set, alice_key, client_for):
    client = client_for(alice_key)
    a, b = (client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=8, temperature=1.0,
                                           top_p=0.9, seed=42).choices[0].message.content for _ in range(2))
    assert a == b


def test_a_disconnect_cancels_the_generation(tiny_set, alice_key, live, slow_decode):
    body = {"model": served_model(), "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{live}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {alice_key}"}) as response:
        next(response.iter_lines())  # the first event: generation has started
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = InteractionLog.objects.filter(source="openai").first()
        if log is not None:
            break
        time.sleep(0.1)
    assert log is not None and log.status == "cancelled" and log.tokens < 400
    # The row leaves the batch at the scheduler's next decode step.
    scheduler = runtime.site_scheduler()
    while time.monotonic() < deadline and scheduler.stats().active_rows:
        time.sleep(0.05)
    assert scheduler.stats().active_rows == 0 and scheduler.stats().waiting == 0


async def test_two_users_concurrent_streams_never_mix(tiny_set, alice_key, bob_key, live):
    """Differently steered streams of two users, together, give each what it gives alone."""

    async def run(key, strength):
        client = openai.AsyncOpenAI(base_url=f"{live}/v1", api_key=key, max_retries=0, timeout=120)
        stream = await client.chat.completions.create(
            model=served_model(), messages=MESSAGES, max_tokens=16, temperature=0, stream=True,
            extra_body={"steering": {"preferences": {"formality": strength}}},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return text

    alone = [await run(alice_key, -1.0), await run(bob_key, 1.0)]
    together = await asyncio.gather(run(alice_key, -1.0), run(bob_key, 1.0))
    assert list(together) == alone and alone[0] != alone[1]


def test_without_steering_the_saved_profile_applies(tiny_set, alice, alice_key, client_for):
    from steering.services import profiles

    profile = profiles.profile_get_or_create(user=alice, vector_set=tiny_set)
    profiles.profile_update(profile=profile, strengths={"cost": -0.5}, source="select")
    client = client_for(alice_key)
    plain = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=2)
    assert plain.model_extra["steering"]["preferences_applied"] == {"cost": -0.5}
    # The request's preferences override the profile dimension by dimension.
    both = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=2,
                                          extra_body={"steering": {"preferences": {"formality": 0.25}}})
    assert both.model_extra["steering"]["preferences_applied"] == {"cost": -0.5, "formality": 0.25}


def test_earlier_turns_reach_the_model(tiny_set, alice_key, client_for):
    """The messages before the last user turn are part of the prompt: usage counts them."""
    client = client_for(alice_key)
    short = client.chat.completions.create(model=served_model(), messages=MESSAGES, max_tokens=1)
    longer = client.chat.completions.create(
        model=served_model(), max_tokens=1,
        messages=[{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi! How can I help?"},
                  *MESSAGES],
    )
    assert longer.usage.prompt_tokens > short.usage.prompt_tokens + 5


def test_a_v1_stream_and_a_rest_chat_share_decode_batches(tiny_set, alice, alice_key, bob, live, slow_decode):
    """The REST chat of another user joins the batch a /v1 stream is decoding in."""
    from rest_framework.test import APIClient

    scheduler = runtime.site_scheduler()
    joins = scheduler.stats().joins
    body = {"model": served_model(), "messages": MESSAGES, "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{live}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {alice_key}"}) as stream:
        lines = stream.iter_lines()
        next(lines)  # decoding has begun
        rest = APIClient()
        rest.force_authenticate(bob)
        response = rest.post("/api/chat/", {"prompt": "hello", "max_new_tokens": 3}, format="json")
        assert response.status_code == 200
    assert scheduler.stats().joins > joins


def test_a_message_list_over_the_cap_is_refused_in_openai_shape(tiny_set, alice_key, client_for, settings):
    settings.STEERLAB_MAX_MESSAGES = 256
    empty = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}] * 128
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(alice_key).chat.completions.create(model=served_model(), messages=[*empty, *MESSAGES], max_tokens=1)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "messages" and caught.value.body["code"] == "array_above_max_length"
    assert "at most 256" in caught.value.body["message"]
    assert not InteractionLog.objects.exists()


def test_deeply_nested_json_is_a_400_in_openai_shape(tiny_set, alice_key, live):
    for depth in (20, 980, 100_000):
        body = b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
        response = httpx.post(f"{live}/v1/chat/completions", content=body, timeout=60,
                              headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"})
        assert response.status_code == 400, depth
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json" and "deeper" in error["message"]


def test_a_body_over_djangos_cap_is_a_413_in_openai_shape(tiny_set, alice_key, live, settings):
    body = {"model": served_model(), "messages": [{"role": "user", "content": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}]}
    response = httpx.post(f"{live}/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 413 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in error["message"]
