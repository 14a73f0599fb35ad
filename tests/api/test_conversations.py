"""/api/conversations/: list and search your conversations, read, rename and delete one; titles
from the first answer. Another user's conversation is simply not found, staff included."""

from __future__ import annotations

import pytest

from steering.models import Conversation, InteractionLog, Message
from steering.services import chat

pytestmark = pytest.mark.django_db


def say(user, conversation, prompt, response, status="ok"):
    return chat.interaction_record(
        user=user, prompt=prompt, response=response, status=status, vector_set=conversation.vector_set,
        strengths={}, params={"max_new_tokens": 64}, tokens=10, latency_ms=5, conversation=conversation,
    )


@pytest.fixture
def dinners(alice, shared_set):
    """Two of alice's conversations that opened with the same question."""
    first = chat.conversation_start(user=alice, first_prompt="Where should I eat tonight?", vector_set=shared_set)
    say(alice, first, "Where should I eat tonight?", "Sure! Here are some ideas. The night market on Rue Verte has cheap dumplings.")
    second = chat.conversation_start(user=alice, first_prompt="Where should I eat tonight?", vector_set=shared_set)
    say(alice, second, "Where should I eat tonight?", "**A quiet trattoria** with handmade pasta is a safe bet.")
    return first, second


def test_the_first_answer_names_the_conversation_so_that_same_questions_differ(dinners):
    first, second = (Conversation.objects.get(pk=c.pk) for c in dinners)
    assert first.title == "The night market on Rue Verte has cheap dumplings"
    assert second.title == "A quiet trattoria"
    assert first.titled and second.titled


def test_a_later_answer_or_a_stopped_first_answer_does_not_rename_it(alice, shared_set):
    conversation = chat.conversation_start(user=alice, first_prompt="Plan a trip to Rome", vector_set=shared_set)
    say(alice, conversation, "Plan a trip to Rome", "Day one: the Colosseum", status="cancelled")
    conversation.refresh_from_db()
    assert conversation.title == "Plan a trip to Rome" and not conversation.titled
    say(alice, conversation, "Plan a trip to Rome", "# Three days in Rome\nDay one…")
    say(alice, conversation, "And Naples?", "# Naples in a day")
    conversation.refresh_from_db()
    assert conversation.title == "Three days in Rome"


def test_titles_are_short_and_skip_filler(dinners):
    long_answer = "Certainly! " + "word " * 40
    title = chat.conversation_title(prompt="Hi", answer=long_answer)
    assert len(title) <= chat.TITLE_CHARS and title.endswith("…") and not title.startswith("Certainly")
    assert chat.conversation_title(prompt="Tell me a joke", answer="Ok!") == "Tell me a joke"


def test_it_lists_and_searches_only_your_own_conversations(as_alice, as_bob, as_charlie, dinners, bob, shared_set):
    bobs = chat.conversation_start(user=bob, first_prompt="Dumplings?", vector_set=shared_set)
    say(bob, bobs, "Dumplings?", "The night market has dumplings.")
    listed = as_alice.get("/api/conversations/").json()
    assert [c["id"] for c in listed["results"]] == [dinners[1].pk, dinners[0].pk]
    assert {"id", "title", "created_at", "updated_at", "vector_set"} <= set(listed["results"][0])
    # Search reads titles and what was said.
    found = as_alice.get("/api/conversations/", {"search": "dumplings"}).json()["results"]
    assert [c["id"] for c in found] == [dinners[0].pk]
    assert [c["id"] for c in as_alice.get("/api/conversations/", {"search": "trattoria"}).json()["results"]] == [
        dinners[1].pk
    ]
    assert as_bob.get("/api/conversations/", {"search": "dumplings"}).json()["results"][0]["id"] == bobs.pk
    assert as_charlie.get("/api/conversations/").json()["results"] == []


def test_it_reads_a_conversation_with_its_messages(as_alice, dinners):
    body = as_alice.get(f"/api/conversations/{dinners[1].pk}/").json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"].startswith("**A quiet trattoria**")


def test_it_renames_your_conversation_and_refuses_a_blank_title(as_alice, dinners):
    response = as_alice.patch(f"/api/conversations/{dinners[0].pk}/", {"title": "  Cheap eats  "}, format="json")
    assert response.status_code == 200 and response.json()["title"] == "Cheap eats"
    blank = as_alice.patch(f"/api/conversations/{dinners[0].pk}/", {"title": "   "}, format="json")
    assert blank.status_code == 400 and "title" in blank.json()
    assert Conversation.objects.get(pk=dinners[0].pk).title == "Cheap eats"
    # A later answer keeps the user's title.
    say(dinners[0].user, dinners[0], "More?", "# Something else")
    assert Conversation.objects.get(pk=dinners[0].pk).title == "Cheap eats"


def test_it_deletes_your_conversation_and_blanks_its_logs_text(as_alice, dinners):
    target = dinners[0]
    logged = list(InteractionLog.objects.filter(conversation=target).values_list("pk", flat=True))
    response = as_alice.delete(f"/api/conversations/{target.pk}/")
    assert response.status_code == 200 and response.json() == {"deleted": True, "interactions_blanked": 1}
    assert not Conversation.objects.filter(pk=target.pk).exists()
    assert not Message.objects.filter(conversation_id=target.pk).exists()
    kept = InteractionLog.objects.get(pk=logged[0])
    assert (kept.prompt, kept.response, kept.tokens) == ("", "", 10)
    # The other conversation is untouched.
    assert InteractionLog.objects.filter(conversation=dinners[1]).exclude(response="").count() == 1


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_user_s_conversation_is_not_found_even_for_staff(as_bob, as_charlie, dinners, method):
    url = f"/api/conversations/{dinners[0].pk}/"
    for client in (as_bob, as_charlie):
        response = getattr(client, method)(url, {"title": "mine"}, format="json") if method == "patch" else getattr(client, method)(url)
        assert response.status_code == 404
    assert Conversation.objects.get(pk=dinners[0].pk).title == "The night market on Rue Verte has cheap dumplings"


def test_the_conversation_endpoints_are_in_the_schema(as_alice):
    schema = as_alice.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"get"} <= set(schema["paths"]["/api/conversations/"])
    assert {"get", "patch", "delete"} <= set(schema["paths"]["/api/conversations/{id}/"])


def test_an_answer_is_rated_once(as_alice, dinners):
    interaction = InteractionLog.objects.filter(conversation=dinners[0]).get()
    assert as_alice.post(f"/api/interactions/{interaction.pk}/feedback/", {"thumbs": 1}, format="json").status_code == 201
    again = as_alice.post(f"/api/interactions/{interaction.pk}/feedback/", {"thumbs": -1, "text": "no"}, format="json")
    assert again.status_code == 409 and "already rated" in again.json()["detail"]
    assert interaction.feedback.count() == 1


def test_the_schema_documents_v1_and_groups_operations_by_domain(as_alice):
    schema = as_alice.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    completions = schema["paths"]["/v1/chat/completions"]["post"]
    assert completions["tags"] == ["OpenAI-compatible (/v1)"]
    assert {"bearerAuth": []} in completions["security"]
    assert "steering" in schema["components"]["schemas"]["V1ChatCompletionRequest"]["properties"]
    assert schema["paths"]["/v1/models"]["get"]["tags"] == ["OpenAI-compatible (/v1)"]
    tags = {tag for path in schema["paths"].values() for op in path.values() for tag in op.get("tags", [])}
    assert "api" not in tags and {"Chat", "Conversations", "Profile", "Vector sets", "Calibrate"} <= tags
    assert [t["name"] for t in schema["tags"]][:2] == ["Chat", "Conversations"]
