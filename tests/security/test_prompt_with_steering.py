"""A vector set's "prompt with steering" option: each request is also told its own user's
strengths in a system prompt, which no other user's request, conversation or log ever holds."""

from __future__ import annotations

import pytest

from steering.chat import turn
from steering.models import InteractionLog, Message, VectorSet
from steering.serving import runtime

pytestmark = pytest.mark.django_db(transaction=True)

ALICES_WORDS = "strongly prefers a formal, polished register"


def _prompt_text(user, **options):
    plan = turn.chat_prepare(user=user, prompt="Plan my day.", preferences=options.get("preferences"),
                                 vector_set_id=options["vector_set"].pk, params={})
    return runtime.site_model().tokenizer.decode(plan.prompt_ids)


def test_each_request_is_told_its_own_users_strengths_and_no_one_elses(world, bob):
    shared = VectorSet.objects.get(name="shared")
    assert ALICES_WORDS not in _prompt_text(world.alice, vector_set=shared)  # off by default
    VectorSet.objects.filter(pk=shared.pk).update(prompt_with_steering=True)
    shared.refresh_from_db()
    assert ALICES_WORDS in _prompt_text(world.alice, vector_set=shared)  # her profile: formality 0.9
    assert "prefers" not in _prompt_text(bob, vector_set=shared)  # bob has no profile: no system prompt
    bobs = _prompt_text(bob, vector_set=shared, preferences={"cost": -0.5})
    assert "somewhat prefers cheap, budget-friendly options" in bobs and "formal" not in bobs


def test_the_system_prompt_is_never_stored(world, as_alice):
    VectorSet.objects.filter(name="shared").update(prompt_with_steering=True)
    shared = VectorSet.objects.get(name="shared")
    response = as_alice.post("/api/chat/", {"prompt": "Plan my day.", "max_new_tokens": 3, "vector_set": shared.pk},
                             format="json")
    assert response.status_code == 200, response.content
    log = InteractionLog.objects.get(pk=response.json()["interaction_id"])
    assert log.prompt == "Plan my day." and "prefers" not in str(log.params)
    assert not Message.objects.filter(content__contains="prefers").exists()


def test_a_worded_set_words_each_request_with_its_own_users_strengths_only(world, bob):
    """Gated prompt + steering: the words a request may get, once its dimensions apply, are its
    own user's, and the prompt ids it is queued with hold no words at all."""
    VectorSet.objects.filter(name="shared").update(worded_dimensions=["cost", "formality"])
    shared = VectorSet.objects.get(name="shared")

    def plan(user, **preferences):
        return turn.chat_prepare(user=user, prompt="Plan my day.", preferences=preferences or None,
                                 vector_set_id=shared.pk, params={})

    alices = plan(world.alice)
    assert ALICES_WORDS in alices.worded.instruction(alices.worded.ends)  # her profile: formality 0.9
    assert "prefers" not in runtime.site_model().tokenizer.decode(alices.prompt_ids)
    assert plan(bob).worded is None  # no profile, nothing to say
    bobs = plan(bob, cost=-0.5).worded
    assert list(bobs.ends) == ["cost"] and "formal" not in bobs.instruction(bobs.ends)
