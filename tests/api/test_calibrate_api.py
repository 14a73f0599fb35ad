"""CALIBRATE over REST: /api/calibrate/start/ and /api/calibrate/choose/ (stateless; the
browser generates the two answers over the websocket, so no model is needed here)."""

import pytest

from steering.modes.calibrate import QUESTIONS
from steering.models import PreferenceProfile, ProfileUpdate

pytestmark = pytest.mark.django_db


def choose(client, state, choice, **extra):
    body = {k: state[k] for k in ("dimension", "low", "high", "round", "rounds")}
    return client.post("/api/calibrate/choose/", {**body, "choice": choice, **extra}, format="json")


def test_it_starts_with_the_full_range_and_the_question(as_alice, shared_set):
    response = as_alice.get("/api/calibrate/start/", {"dimension": "cost"})
    assert response.status_code == 200
    assert response.json() == {
        "dimension": "cost", "low": -1.0, "high": 1.0, "round": 0, "rounds": 3, "done": False,
        "result": 0.0, "question": QUESTIONS["cost"], "vector_set": shared_set.pk, "profile": None,
    }
    assert not PreferenceProfile.objects.exists()  # starting changes nothing


def test_it_starts_with_the_rounds_asked_for(as_alice, shared_set):
    body = as_alice.get("/api/calibrate/start/", {"dimension": "formality", "rounds": 2}).json()
    assert body["rounds"] == 2 and body["question"] == QUESTIONS["formality"]


def test_each_choice_narrows_the_interval_without_touching_the_profile(as_alice, shared_set):
    state = as_alice.get("/api/calibrate/start/", {"dimension": "cost"}).json()
    state = choose(as_alice, state, "a").json()
    assert (state["low"], state["high"], state["round"], state["done"]) == (-1.0, 0.0, 1, False)
    assert state["result"] == -0.5 and state["profile"] is None
    state = choose(as_alice, state, "slightly_b").json()
    assert (state["low"], state["high"], state["round"]) == (-0.75, 0.0, 2)
    assert not ProfileUpdate.objects.exists()


def test_the_last_round_writes_the_result_to_the_profile(as_alice, alice, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.4}}, format="json")
    state = as_alice.get("/api/calibrate/start/", {"dimension": "cost", "rounds": 2}).json()
    state = choose(as_alice, state, "a").json()
    response = choose(as_alice, state, "a")
    assert response.status_code == 200
    state = response.json()
    assert (state["low"], state["high"], state["done"], state["result"]) == (-1.0, -0.5, True, -0.75)
    profile = state["profile"]
    assert profile["mode"] == "calibrate" and profile["strengths"] == {"formality": 0.4, "cost": -0.75}
    assert {d["name"]: d["summary"] for d in profile["dimensions"]}["cost"] == "75 % Budget"
    update = ProfileUpdate.objects.get(dimension="cost")
    assert (update.source, update.old_strength, update.new_strength) == ("calibrate", 0.0, -0.75)
    assert update.reason == "Calibrated over 2 rounds"
    assert PreferenceProfile.objects.get(user=alice, vector_set=shared_set).mode == "calibrate"


def test_it_calibrates_on_a_named_vector_set(as_alice, alice, shared_set, alices_set):
    state = {"dimension": "formality", "low": -1, "high": 1, "round": 0, "rounds": 1}
    body = choose(as_alice, state, "b", vector_set=alices_set.pk).json()
    assert body["vector_set"] == alices_set.pk and body["profile"]["strengths"] == {"formality": 0.5}
    assert PreferenceProfile.objects.get(user=alice, vector_set=alices_set).strengths == {"formality": 0.5}
    assert not PreferenceProfile.objects.filter(vector_set=shared_set).exists()


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"choice": "c"}, "choice", "not a valid choice"),
        ({"low": 0.5, "high": 0.5}, "low", "less than high"),
        ({"low": -1.5}, "low", "between -1 and 1"),
        ({"high": "nan"}, "high", "valid number"),
        ({"rounds": 6}, "rounds", "less than or equal to 5"),
        ({"rounds": 0}, "rounds", "greater than or equal to 1"),
        ({"round": 3}, "round", "already done"),
        ({"round": -1}, "round", "greater than or equal to 0"),
        ({"dimension": "sarcasm"}, "dimension", "unknown dimension"),
        ({"vector_set": "x"}, "vector_set", "valid integer"),
    ],
)
def test_it_rejects_bad_input_and_changes_nothing(as_alice, shared_set, change, field, message):
    state = {"dimension": "cost", "low": -1.0, "high": 1.0, "round": 2, "rounds": 3, "choice": "a", **change}
    response = as_alice.post("/api/calibrate/choose/", state, format="json")
    assert response.status_code == 400
    assert message in str(response.json()[field]).lower()
    assert not PreferenceProfile.objects.exists()


def test_it_rejects_a_missing_choice(as_alice, shared_set):
    response = as_alice.post("/api/calibrate/choose/", {"dimension": "cost", "low": -1, "high": 1, "round": 0}, format="json")
    assert response.status_code == 400 and "choice" in response.json()


@pytest.mark.parametrize(
    "query, field",
    [({}, "dimension"), ({"dimension": "sarcasm"}, "dimension"), ({"dimension": "cost", "rounds": 9}, "rounds")],
)
def test_start_rejects_bad_input(as_alice, shared_set, query, field):
    response = as_alice.get("/api/calibrate/start/", query)
    assert response.status_code == 400 and field in response.json()


def test_a_dimension_of_another_set_is_unknown(as_alice, alices_set, shared_set):
    response = as_alice.get("/api/calibrate/start/", {"dimension": "cost", "vector_set": alices_set.pk})
    assert response.status_code == 400 and "formality" in str(response.json()["dimension"])


def test_bob_cannot_calibrate_on_alices_private_set(as_bob, alices_set, shared_set):
    assert as_bob.get("/api/calibrate/start/", {"dimension": "formality", "vector_set": alices_set.pk}).status_code == 404
    state = {"dimension": "formality", "low": -1, "high": 1, "round": 0, "rounds": 1}
    assert choose(as_bob, state, "b", vector_set=alices_set.pk).status_code == 404
    assert not PreferenceProfile.objects.exists()


def test_without_a_default_set_it_says_so(as_alice, dimensions):
    response = as_alice.get("/api/calibrate/start/", {"dimension": "cost"})
    assert response.status_code == 404 and "default vector set" in response.json()["detail"]


def test_anonymous_calibration_is_refused(client, shared_set):
    assert client.get("/api/calibrate/start/?dimension=cost").status_code == 401
    body = {"dimension": "cost", "low": -1, "high": 1, "round": 0, "rounds": 1, "choice": "a"}
    assert client.post("/api/calibrate/choose/", body, content_type="application/json").status_code == 401
    assert not PreferenceProfile.objects.exists()
