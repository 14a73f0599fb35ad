"""Limits count tokens, not characters: the prompt and the conversation's history, in the
served model's tokens, must leave room for max_new_tokens in the model's context (the tiny
site model's is 256). History is trimmed oldest turns first; a request that cannot fit at all
answers 400 with the numbers (REST), or an error frame (websocket)."""

import pytest
from asgiref.sync import sync_to_async

from steering.models import Conversation, InteractionLog, Message
from steering.services import chat, vector_sets
from steering.serving import runtime
from tests.api.conftest import as_alice, dimensions  # noqa: F401  (fixtures)
from tests.security.conftest import tiny_vectors
from tests.ws.conftest import connect

CONTEXT = 256


@pytest.fixture
def vector_set(tiny_site, dimensions):
    return vector_sets.vector_set_register(vectors=tiny_vectors(["formality", "cost"]), name="shared")


def words(n: int) -> str:
    return " ".join(["steer"] * n)


def conversation_of(user, vector_set, turns: int, length: int) -> Conversation:
    conversation = Conversation.objects.create(user=user, title="long", vector_set=vector_set)
    for n in range(turns):
        Message.objects.create(conversation=conversation, role="user", content=f"q{n} " + words(length))
        Message.objects.create(conversation=conversation, role="assistant", content=f"a{n} " + words(length))
    return conversation


def prepare(user, prompt, conversation=None, max_new_tokens=16):
    return chat.chat_prepare(user=user, prompt=prompt, preferences={}, vector_set_id=None,
                                 params={"max_new_tokens": max_new_tokens},
                                 conversation_id=conversation.pk if conversation else None)


@pytest.mark.django_db
def test_the_context_is_the_served_models(vector_set):
    assert chat.chat_context_tokens() == CONTEXT == runtime.site_model().model.config.max_position_embeddings


@pytest.mark.django_db
def test_history_is_trimmed_oldest_turns_first_to_fit(vector_set, alice):
    conversation = conversation_of(alice, vector_set, turns=3, length=12)
    whole = len(runtime.site_model().chat_ids(
        [{"role": m.role, "content": m.content} for m in conversation.messages.order_by("pk")]
        + [{"role": "user", "content": "And now?"}]))
    last_turn = len(runtime.site_model().chat_ids(
        [{"role": m.role, "content": m.content} for m in conversation.messages.order_by("pk")][4:]
        + [{"role": "user", "content": "And now?"}]))
    max_new_tokens = CONTEXT - (whole + last_turn) // 2  # room for the newest turn, not for all three
    plan = prepare(alice, "And now?", conversation, max_new_tokens=max_new_tokens)
    assert len(plan.prompt_ids) + max_new_tokens <= CONTEXT
    text = runtime.site_model().tokenizer.decode(plan.prompt_ids)
    assert "q2" in text and "a2" in text and "And now?" in text  # the newest turn stays
    assert "q0" not in text and "a0" not in text  # the oldest went first


@pytest.mark.django_db
def test_history_that_fits_is_kept_whole(vector_set, alice):
    conversation = conversation_of(alice, vector_set, turns=2, length=2)
    text = runtime.site_model().tokenizer.decode(prepare(alice, "And now?", conversation).prompt_ids)
    assert all(tag in text for tag in ("q0", "a0", "q1", "a1"))


@pytest.mark.django_db
def test_a_prompt_that_cannot_fit_is_refused_with_the_numbers(vector_set, alice):
    with pytest.raises(ValueError) as refused:
        prepare(alice, words(300), max_new_tokens=16)
    message = str(refused.value)
    assert "tokens" in message and f"{CONTEXT}" in message and "16" in message


@pytest.mark.django_db
def test_max_new_tokens_counts_against_the_context(vector_set, alice):
    prepare(alice, "Hello", max_new_tokens=200)
    with pytest.raises(ValueError, match=f"context of {CONTEXT} tokens"):
        prepare(alice, "Hello", max_new_tokens=CONTEXT)


@pytest.mark.django_db(transaction=True)  # the async view prepares on another thread
def test_rest_chat_answers_400_with_the_numbers_and_logs_nothing(vector_set, as_alice):
    response = as_alice.post("/api/chat/", {"prompt": words(300), "max_new_tokens": 8}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "bad_request" and f"context of {CONTEXT} tokens" in body["detail"]
    assert not InteractionLog.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_answers_an_error_frame_and_stays_open(vector_set, alice):
    ws, connected, _ = await connect(alice)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": words(300), "max_new_tokens": 8})
    frame = await ws.receive_json_from(timeout=30)
    assert frame["type"] == "error" and frame["code"] == "bad_request" and f"{CONTEXT} tokens" in frame["message"]
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=10))["type"] == "pong"
    assert not await sync_to_async(InteractionLog.objects.exists)()
    await ws.disconnect()
