"""Limits count tokens, not characters: the prompt and the conversation's history, in the
served model's tokens, must leave room for max_new_tokens in the model's context (the tiny
site model's is 256). History is trimmed oldest turns first; a request that cannot fit at all
answers 400 with the numbers (REST), or an error frame (websocket)."""

import pytest
from asgiref.sync import sync_to_async

from steering.chat import turn
from steering.models import Conversation, InteractionLog, Message
from steering.services import vector_sets
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
    return turn.chat_prepare(user=user, prompt=prompt, preferences={}, vector_set_id=None,
                                 params={"max_new_tokens": max_new_tokens},
                                 conversation_id=conversation.pk if conversation else None)


@pytest.mark.django_db
def test_the_context_is_the_served_models(vector_set):
    assert turn.chat_context_tokens() == CONTEXT == runtime.site_model().model.config.max_position_embeddings


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


class CountingRenders:
    """The site model, counting its chat-template renders and the messages they held."""

    def __init__(self, loaded):
        self.loaded, self.renders, self.messages = loaded, 0, 0

    def __getattr__(self, name):
        return getattr(self.loaded, name)

    def chat_ids(self, messages, system=None):
        self.renders += 1
        self.messages += len(messages)
        return self.loaded.chat_ids(messages, system=system)


def fit_one_turn_at_a_time(*, history, prompt, max_new_tokens, loaded, system=None):
    """What chat_fit_context did before issue 23: drop the oldest turn, render again."""
    room = turn.chat_context_tokens(loaded) - max_new_tokens
    question = {"role": "user", "content": prompt}
    framing = []
    while history and history[0]["role"] == "system":
        framing, history = [*framing, history[0]], history[1:]
    alone = loaded.chat_ids([*framing, question], system=system)
    while history:
        ids = loaded.chat_ids([*framing, *history, question], system=system)
        if len(ids) <= room:
            return ids
        history = history[1:]
        while history and history[0]["role"] != "user":
            history = history[1:]
    return alone


def random_history(rng, turns: int) -> list[dict]:
    history = [{"role": "system", "content": words(rng.randrange(0, 6))} for _ in range(rng.choice([0, 0, 1, 2]))]
    roles = ["user", "assistant"] if rng.random() < 0.8 else ["assistant", "user"]
    for n in range(turns):
        # Mostly alternating, now and then two turns of one role or an empty one, as clients send.
        role = roles[n % 2] if rng.random() < 0.85 else rng.choice(roles)
        history.append({"role": role, "content": f"t{n} " + words(rng.randrange(0, 25)) if rng.random() < 0.9 else ""})
    return history


@pytest.mark.django_db
def test_fitting_keeps_exactly_the_turns_dropping_one_at_a_time_kept(vector_set):
    import random

    rng = random.Random(23)
    loaded = runtime.site_model()
    for case in range(60):
        history = random_history(rng, rng.randrange(0, 30))
        max_new_tokens = rng.choice([8, 32, 64, 128, 180])
        system = rng.choice([None, "Be brief."])
        expected = fit_one_turn_at_a_time(history=history, prompt="And now?", max_new_tokens=max_new_tokens,
                                          loaded=loaded, system=system)
        fitted = turn.chat_fit_context(history=history, prompt="And now?", max_new_tokens=max_new_tokens,
                                       loaded=loaded, system=system)
        assert fitted == expected, case


@pytest.mark.django_db
def test_three_thousand_empty_messages_fit_in_a_few_short_renders(vector_set):
    loaded = CountingRenders(runtime.site_model())
    history = [{"role": ("user", "assistant")[n % 2], "content": ""} for n in range(3000)]
    ids = turn.chat_fit_context(history=history, prompt="And now?", max_new_tokens=16, loaded=loaded)
    assert 0 < len(ids) <= CONTEXT - 16
    # Dropping one turn at a time took some 1500 renders of up to 3000 messages each. Now a
    # few renders, none of them longer than twice what the context holds: all of them
    # together hold fewer messages than one render of the whole list.
    assert loaded.renders <= 2 * 12 + 2
    assert loaded.messages < len(history)
    # The newest turns are the ones kept, as many as fit.
    longer = loaded.loaded.chat_ids([*history[-(len(ids) + 2):], {"role": "user", "content": "And now?"}])
    assert len(longer) > CONTEXT - 16


@pytest.mark.django_db
def test_a_conversation_gives_at_most_max_messages_of_its_newest_turns(vector_set, alice, settings):
    settings.STEERLAB_MAX_MESSAGES = 3  # the prompt and two earlier turns
    conversation = conversation_of(alice, vector_set, turns=200, length=0)
    text = runtime.site_model().tokenizer.decode(prepare(alice, "And now?", conversation).prompt_ids)
    assert "q199" in text and "a199" in text and "a198" not in text


@pytest.mark.django_db
def test_a_client_history_over_max_messages_is_refused(vector_set, alice, settings):
    settings.STEERLAB_MAX_MESSAGES = 4
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 2
    with pytest.raises(ValueError, match="5 messages, more than this server's 4"):
        turn.chat_prepare(user=alice, prompt="And now?", preferences={}, vector_set_id=None,
                          params={"max_new_tokens": 8}, history=history)
    turn.chat_prepare(user=alice, prompt="And now?", preferences={}, vector_set_id=None,
                      params={"max_new_tokens": 8}, history=history[1:])


def test_a_chat_turn_is_framed_by_the_sites_system_prompt(vector_set, alice, settings):
    # Unset: the chat template's own framing (the tiny template adds no system turn).
    text = runtime.site_tokenizer().tokenizer.decode(prepare(alice, "hello").prompt_ids)
    assert text.startswith("<|user|>hello")
    settings.STEERLAB_SYSTEM_PROMPT = "Be brief."
    text = runtime.site_tokenizer().tokenizer.decode(prepare(alice, "hello").prompt_ids)
    assert text.startswith("<|system|>Be brief.<|im_end|><|user|>hello")
    # a request's own instruction (prompt with steering) follows it, in the same turn
    vector_set.prompt_with_steering = True
    vector_set.save()
    plan = turn.chat_prepare(user=alice, prompt="hello", preferences={"formality": 1.0}, vector_set_id=vector_set.pk,
                             params={"max_new_tokens": 8})
    text = runtime.site_tokenizer().tokenizer.decode(plan.prompt_ids)
    assert text.startswith("<|system|>Be brief.\n\nAnswer for someone who strongly prefers")
