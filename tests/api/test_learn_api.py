"""LEARN through the API: feedback on an answer is logged, and in LEARN mode a django-q2 task
(run in sync mode here, for real) moves the profile by the paper's rule; the change shows on
the feedback and in the history, and can be undone. CALIBRATE choices are logged as feedback."""

import pytest

from steering.models import Feedback, InteractionLog, PreferenceProfile, ProfileUpdate
from steering.services import chat, feedback, profiles

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tasks_run_inline(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}


def answer(user, vector_set, strengths=None, source=InteractionLog.Source.WEBSOCKET):
    return chat.interaction_record(
        user=user, prompt="Where should I eat tonight?", response="Le Bernardin, tasting menu.", status="ok",
        vector_set=vector_set, strengths=strengths or {}, params={}, tokens=9, latency_ms=300, source=source,
    )


def learning(user, vector_set, strengths=None):
    profile = profiles.profile_get_or_create(user=user, vector_set=vector_set)
    profiles.profile_update(profile=profile, strengths=strengths or {}, source="api", mode="learn")
    return profile


def give(client, interaction, payload, capture):
    with capture(execute=True):
        response = client.post(f"/api/interactions/{interaction.pk}/feedback/", payload, format="json")
    assert response.status_code == 201, response.json()
    return client.get(f"/api/feedback/{response.json()['id']}/").json()


def test_thumbs_down_with_a_text_moves_the_profile_in_learn_mode(
    as_alice, alice, shared_set, django_capture_on_commit_callbacks
):
    learning(alice, shared_set)
    body = give(as_alice, answer(alice, shared_set), {"thumbs": -1, "text": "too expensive"},
                django_capture_on_commit_callbacks)
    assert body["learn_status"] == "applied", body
    assert body["learn_note"] == "Learned: cost Neutral → 35 % Budget"
    (update,) = body["updates"]
    assert (update["dimension"], update["old_strength"], update["new_strength"], update["source"]) == (
        "cost", 0.0, -0.35, "learn"
    )
    assert "too expensive" in update["reason"] and "Budget" in update["reason"]
    profile = as_alice.get("/api/profile/").json()
    assert profile["strengths"] == {"cost": -0.35} and profile["mode"] == "learn"
    assert next(d["summary"] for d in profile["dimensions"] if d["name"] == "cost") == "35 % Budget"


def test_learn_moves_a_profile_the_right_way_over_a_sequence_of_feedback(
    as_alice, alice, shared_set, django_capture_on_commit_callbacks
):
    learning(alice, shared_set)
    texts = [
        (-1, "way too pricey for me"), (None, "cheaper options please"), (1, ""),
        (-1, "this is too formal"), (-1, "too expensive again"), (None, "talk to me more casually"),
    ]
    seen = []
    for thumbs, text in texts:
        payload = {"text": text, **({"thumbs": thumbs} if thumbs else {})}
        give(as_alice, answer(alice, shared_set), payload, django_capture_on_commit_callbacks)
        seen.append(dict(PreferenceProfile.objects.get(user=alice).strengths))
    costs = [s.get("cost", 0.0) for s in seen]
    assert all(b <= a for a, b in zip(costs, costs[1:])), costs  # never back toward luxury
    assert costs[-1] < -0.6 and costs[1] < costs[0] < 0
    assert seen[2] == seen[1]  # a thumbs up changed nothing
    assert seen[-1]["formality"] < seen[3]["formality"] < 0  # toward casual, twice
    assert ProfileUpdate.objects.filter(source="learn").count() == 5  # one per changing feedback


def test_feedback_outside_learn_mode_is_logged_but_changes_nothing(
    as_alice, alice, shared_set, django_capture_on_commit_callbacks
):
    profiles.profile_get_or_create(user=alice, vector_set=shared_set)  # SELECT, the default
    body = give(as_alice, answer(alice, shared_set), {"thumbs": -1, "text": "too expensive"},
                django_capture_on_commit_callbacks)
    assert body["learn_status"] == "off" and "Learn mode" in body["learn_note"]
    assert PreferenceProfile.objects.get(user=alice).strengths == {}
    assert Feedback.objects.get().text == "too expensive"


def test_a_thumbs_up_changes_nothing_and_says_so(as_alice, alice, shared_set, django_capture_on_commit_callbacks):
    learning(alice, shared_set, {"cost": 0.4})
    body = give(as_alice, answer(alice, shared_set), {"thumbs": 1}, django_capture_on_commit_callbacks)
    assert body["learn_status"] == "unchanged" and body["updates"] == []
    assert PreferenceProfile.objects.get(user=alice).strengths == {"cost": 0.4}


def test_a_thumbs_down_that_names_nothing_asks_for_words(
    as_alice, alice, shared_set, django_capture_on_commit_callbacks
):
    learning(alice, shared_set, {"cost": 0.4})
    body = give(as_alice, answer(alice, shared_set), {"thumbs": -1}, django_capture_on_commit_callbacks)
    assert body["learn_status"] == "unchanged" and "few words" in body["learn_note"]
    assert PreferenceProfile.objects.get(user=alice).strengths == {"cost": 0.4}


def test_a_learned_change_can_be_undone(as_alice, alice, shared_set, django_capture_on_commit_callbacks):
    learning(alice, shared_set, {"cost": 0.5})
    body = give(as_alice, answer(alice, shared_set), {"thumbs": -1, "text": "too expensive"},
                django_capture_on_commit_callbacks)
    assert PreferenceProfile.objects.get(user=alice).strengths == {"cost": 0.15}
    undo = as_alice.post(f"/api/profile/history/{body['updates'][0]['id']}/undo/")
    assert undo.status_code == 200 and undo.json()["undone"] is True
    assert PreferenceProfile.objects.get(user=alice).strengths == {"cost": 0.5}
    history = as_alice.get("/api/profile/history/").json()["results"]
    assert [h["source"] for h in history[:2]] == ["undo", "learn"]


def test_learning_touches_only_the_feedback_givers_profile(
    as_alice, as_bob, alice, bob, shared_set, django_capture_on_commit_callbacks
):
    learning(alice, shared_set)
    learning(bob, shared_set, {"cost": 0.2})
    give(as_alice, answer(alice, shared_set), {"thumbs": -1, "text": "too expensive"}, django_capture_on_commit_callbacks)
    assert PreferenceProfile.objects.get(user=bob).strengths == {"cost": 0.2}
    # Bob cannot read Alice's feedback, nor give feedback on her answer.
    feedback = Feedback.objects.get(user=alice)
    assert as_bob.get(f"/api/feedback/{feedback.pk}/").status_code == 404
    assert as_bob.post(f"/api/interactions/{feedback.interaction_id}/feedback/", {"thumbs": -1}, format="json").status_code == 404


def test_a_failed_learn_task_marks_the_feedback_failed_and_keeps_the_profile(
    as_alice, alice, shared_set, settings, django_capture_on_commit_callbacks
):
    learning(alice, shared_set, {"cost": 0.4})
    settings.STEERLAB_EMBEDDER = "/nonexistent/embedding-model"  # the worker cannot load it
    body = give(as_alice, answer(alice, shared_set), {"thumbs": -1, "text": "too expensive"},
                django_capture_on_commit_callbacks)
    assert body["learn_status"] == "failed" and "still logged" in body["learn_note"]
    assert PreferenceProfile.objects.get(user=alice).strengths == {"cost": 0.4}
    assert not ProfileUpdate.objects.filter(source="learn").exists()


# -- CALIBRATE choices are feedback too ------------------------------------------------------


def choose(client, shared_set, **extra):
    payload = {"dimension": "cost", "low": -1, "high": 1, "round": 0, "rounds": 1, "choice": "a",
               "vector_set": shared_set.pk, **extra}
    return client.post("/api/calibrate/choose/", payload, format="json")


def test_a_calibrate_choice_is_logged_as_feedback_on_both_answers(as_alice, alice, shared_set):
    a = answer(alice, shared_set, {"cost": -1}, source=InteractionLog.Source.CALIBRATE)
    b = answer(alice, shared_set, {"cost": 1}, source=InteractionLog.Source.CALIBRATE)
    response = choose(as_alice, shared_set, interaction_a=a.pk, interaction_b=b.pk)
    assert response.status_code == 200, response.json()
    feedback = Feedback.objects.get()
    assert (feedback.interaction_id, feedback.other_interaction_id, feedback.choice) == (a.pk, b.pk, "a")
    # The last round's profile change points at the choice that made it.
    assert ProfileUpdate.objects.get(source="calibrate").feedback_id == feedback.pk


def test_a_calibrate_choice_on_someone_elses_answers_is_refused_and_changes_nothing(
    as_bob, alice, shared_set
):
    a = answer(alice, shared_set, source=InteractionLog.Source.CALIBRATE)
    b = answer(alice, shared_set, source=InteractionLog.Source.CALIBRATE)
    response = choose(as_bob, shared_set, interaction_a=a.pk, interaction_b=b.pk)
    assert response.status_code == 400 and "your own answers" in str(response.json())
    assert not Feedback.objects.exists() and not ProfileUpdate.objects.exists()


def test_one_answer_id_alone_is_refused(as_alice, alice, shared_set):
    a = answer(alice, shared_set)
    response = choose(as_alice, shared_set, interaction_a=a.pk)
    assert response.status_code == 400 and not ProfileUpdate.objects.exists()


def test_the_cluster_hook_marks_a_crashed_learn_task_failed(alice, shared_set):
    from django_q.models import Task

    from steering import tasks

    learning(alice, shared_set)
    given = feedback.feedback_submit(user=alice, interaction=answer(alice, shared_set), thumbs=-1, text="too formal")
    assert given.learn_status == "pending"  # its task never ran (no commit in this test)
    tasks.learn_from_feedback_finished(Task(args=(given.pk,), success=False, result="worker killed"))
    given.refresh_from_db()
    assert given.learn_status == "failed"
    # A hook for a task that succeeded leaves the feedback alone.
    Feedback.objects.filter(pk=given.pk).update(learn_status="applied")
    tasks.learn_from_feedback_finished(Task(args=(given.pk,), success=True, result="applied"))
    given.refresh_from_db()
    assert given.learn_status == "applied"
