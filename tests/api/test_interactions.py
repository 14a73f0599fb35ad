import pytest

from steering.models import Feedback, InteractionLog
from steering.services import chat

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_log(alice, shared_set):
    return chat.interaction_record(
        user=alice, prompt="Plan a dinner", response="Try the bistro.", status="ok", vector_set=shared_set,
        strengths={"cost": -0.5}, params={"max_new_tokens": 20}, tokens=5, latency_ms=120,
    )


def test_it_lists_only_your_own_interactions(as_alice, as_bob, alices_log):
    results = as_alice.get("/api/interactions/").json()["results"]
    assert [r["id"] for r in results] == [alices_log.pk]
    assert results[0]["strengths"] == {"cost": -0.5} and results[0]["status"] == "ok"
    assert as_bob.get("/api/interactions/").json()["results"] == []
    assert as_bob.get(f"/api/interactions/{alices_log.pk}/").status_code == 404


def test_feedback_is_recorded_on_your_own_interaction(as_alice, alices_log):
    response = as_alice.post(
        f"/api/interactions/{alices_log.pk}/feedback/", {"thumbs": -1, "text": "too cheap"}, format="json"
    )
    assert response.status_code == 201, response.json()
    feedback = Feedback.objects.get()
    assert (feedback.thumbs, feedback.text, feedback.interaction_id) == (-1, "too cheap", alices_log.pk)


def test_bob_cannot_give_feedback_on_alices_interaction(as_bob, alices_log):
    response = as_bob.post(f"/api/interactions/{alices_log.pk}/feedback/", {"thumbs": 1}, format="json")
    assert response.status_code == 404
    assert not Feedback.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"thumbs": 2}, {"thumbs": None, "text": "   "}, {"choice": "maybe"}])
def test_it_rejects_empty_or_bad_feedback(as_alice, alices_log, payload):
    assert as_alice.post(f"/api/interactions/{alices_log.pk}/feedback/", payload, format="json").status_code == 400
    assert not Feedback.objects.exists()


def test_interactions_are_paginated(as_alice, alice, shared_set):
    InteractionLog.objects.bulk_create(
        [InteractionLog(user=alice, prompt=f"p{i}", response="r") for i in range(55)]
    )
    first = as_alice.get("/api/interactions/").json()
    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"]
