"""POST /api/chat/ on the real embedded model."""

import pytest

from steering.models import InteractionLog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _chat(client, **payload):
    payload.setdefault("prompt", "Give me one tip for a weekend trip.")
    payload.setdefault("max_new_tokens", 20)
    payload = {key: value for key, value in payload.items() if value is not None}
    return client.post("/api/chat/", payload, format="json")


def test_it_answers_with_the_contract_fields_and_logs_the_interaction(as_alice, alice, shared_set):
    response = _chat(as_alice, preferences={"formality": 0.5}, session_id="s1")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["generated_text"].strip() and 0 < body["tokens"] <= 20
    assert body["preferences_applied"] == {"formality": 0.5} and body["vector_set"] == shared_set.pk
    log = InteractionLog.objects.get(pk=body["interaction_id"])
    assert (log.user, log.response, log.strengths, log.session_id, log.status) == (
        alice, body["generated_text"], {"formality": 0.5}, "s1", "ok")
    assert log.tokens == body["tokens"] and log.latency_ms == body["latency_ms"] > 0


def test_the_profile_steers_and_request_preferences_override_it(as_alice, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.7, "cost": -0.4}}, format="json")
    body = _chat(as_alice, preferences={"cost": 0.2}).json()
    assert body["preferences_applied"] == {"formality": 0.7, "cost": 0.2}
    neutral = _chat(as_alice, preferences={"formality": 0, "cost": 0}).json()
    assert neutral["preferences_applied"] == {}


def test_steering_changes_the_answer_and_greedy_is_repeatable(as_alice, shared_set):
    plain = _chat(as_alice, temperature=0).json()["generated_text"]
    assert _chat(as_alice, temperature=0).json()["generated_text"] == plain
    steered = _chat(as_alice, temperature=0, preferences={"formality": 1, "cost": 1}).json()["generated_text"]
    assert steered != plain


def test_it_samples_with_a_repetition_guard_by_default_and_a_seed_repeats_it(as_alice, shared_set):
    first = _chat(as_alice, seed=11).json()
    assert _chat(as_alice, seed=11).json()["generated_text"] == first["generated_text"]
    params = InteractionLog.objects.get(pk=first["interaction_id"]).params
    assert params["temperature"] > 0 and params["seed"] == 11
    assert params["repetition_penalty"] > 1 and params["no_repeat_ngram_size"] > 0


def test_the_repetition_guard_can_be_switched_off(as_alice, shared_set):
    body = _chat(as_alice, temperature=0, repetition_penalty=1, no_repeat_ngram_size=0).json()
    params = InteractionLog.objects.get(pk=body["interaction_id"]).params
    assert (params["temperature"], params["repetition_penalty"], params["no_repeat_ngram_size"]) == (0, 1, 0)


def test_max_length_is_the_seed_alias_of_max_new_tokens(as_alice, shared_set):
    body = _chat(as_alice, max_new_tokens=None, max_length=5).json()
    assert body["tokens"] <= 5


def test_one_users_profile_never_steers_another(as_alice, as_bob, shared_set):
    plain = _chat(as_bob, temperature=0).json()
    as_alice.patch("/api/profile/", {"strengths": {"formality": 1.0}}, format="json")
    assert _chat(as_bob, temperature=0).json()["generated_text"] == plain["generated_text"]
    assert _chat(as_bob).json()["preferences_applied"] == {}


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"max_new_tokens": 100000}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"preferences": {"formality": 3}}, "preferences"),
        ({"preferences": {"formality": "nan"}}, "preferences"),
        ({"seed": -4}, "seed"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"repetition_penalty": "nan"}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ],
)
def test_it_rejects_bad_requests_with_a_message(as_alice, shared_set, payload, field):
    response = _chat(as_alice, **payload)
    assert response.status_code == 400
    assert field in response.json()
    assert not InteractionLog.objects.exists()


def test_unknown_dimensions_and_foreign_vector_sets_are_refused(as_alice, as_bob, alices_set, shared_set):
    response = _chat(as_alice, preferences={"sarcasm": 0.5})
    assert response.status_code == 400 and "sarcasm" in response.json()["detail"]
    assert _chat(as_bob, vector_set=alices_set.pk).status_code == 404
    assert _chat(as_alice, vector_set=alices_set.pk).status_code == 200
    assert not InteractionLog.objects.filter(user__username="bob").exists()


def test_anonymous_chat_is_refused(client, shared_set):
    assert client.post("/api/chat/", {"prompt": "hi"}, content_type="application/json").status_code == 401


def _hold(user_key, count):
    """`count` long generations queued on the site's scheduler under `user_key`."""
    from steering.engine import GenerationParams, GenerationRequest
    from steering.serving import runtime

    loaded = runtime.site_model()
    scheduler = runtime.site_scheduler()
    return [
        scheduler.submit(GenerationRequest(prompt_ids=loaded.chat_ids("Tell a long story."),
                                           params=GenerationParams(max_new_tokens=2000)), user=user_key)
        for _ in range(count)
    ]


def test_a_full_queue_answers_503_with_retry_after(as_alice, shared_set):
    from steering.serving import runtime

    scheduler = runtime.site_scheduler()
    held = _hold(None, scheduler.max_queue - scheduler.stats().waiting - scheduler.stats().active_rows)
    try:
        response = _chat(as_alice)
        assert response.status_code == 503
        assert int(response["Retry-After"]) >= 1 and "busy" in response.json()["detail"]
        assert not InteractionLog.objects.exists()  # refused before it started: nothing to log
    finally:
        for ticket in held:
            ticket.cancel()
    for ticket in held:
        assert ticket.wait(30)
    assert _chat(as_alice).status_code == 200


def test_one_user_may_run_only_so_many_generations_at_once(as_alice, as_bob, alice, shared_set, settings):
    held = _hold(str(alice.pk), settings.STEERLAB_MAX_PER_USER)
    try:
        response = _chat(as_alice)
        assert response.status_code == 429 and "at most" in response.json()["detail"]
        assert _chat(as_bob).status_code == 200  # others are not held up by alice's limit
    finally:
        for ticket in held:
            ticket.cancel()


def test_chat_is_throttled_per_user(as_alice, shared_set, settings):
    # An hour, not a minute: the first chat may spend a minute loading the model.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "chat": "1/hour"},
    }
    assert _chat(as_alice, max_new_tokens=2).status_code == 200
    response = _chat(as_alice, max_new_tokens=2)
    assert response.status_code == 429 and "Retry-After" in response
