"""Choosing the vector set one's chats steer with (issue 27, item 10): PATCH /api/profile/
{"vector_set": id}, honoured by every request that names no set (profile, chat, calibration);
refused with a 400 for a set that is not ready, is for another model, or is another user's.
On the tiny site model, with random vectors: what is tested is which set steers."""

import pytest

from steering.models import PreferenceProfile, VectorSet
from steering.serving import runtime
from steering.services import vector_sets
from tests.api.conftest import make_vectors

pytestmark = pytest.mark.django_db(transaction=True)  # the chat turn reads the database from another thread


@pytest.fixture
def sets(tiny_site):
    """The site default (formality, cost: the most dimensions) and a second shared set (age)."""
    loaded = runtime.site_model()
    for name in ("formality", "cost", "age"):
        vector_sets.dimension_import_default(name=name)
    shape = {"hidden": loaded.hidden_size, "layers": loaded.num_layers, "range_": 0.5}
    default = vector_sets.vector_set_register(vectors=make_vectors(["formality", "cost"], **shape), name="default")
    age = vector_sets.vector_set_register(vectors=make_vectors(["age"], seed=2, **shape), name="age only")
    return default, age


def _dimensions(body) -> list[str]:
    return [d["name"] for d in body["dimensions"]]


def test_a_chosen_set_steers_every_request_that_names_none(as_alice, as_bob, sets):
    default, age = sets
    assert as_alice.get("/api/profile/").json()["vector_set"] == default.pk

    chosen = as_alice.patch("/api/profile/", {"vector_set": age.pk}, format="json")
    assert chosen.status_code == 200, chosen.json()
    body = chosen.json()
    assert (body["vector_set"], body["vector_set_name"], body["chosen"], _dimensions(body)) == (
        age.pk, "age only", True, ["age"])

    # The sliders (PATCH without a set) now move the chosen set's dimensions…
    moved = as_alice.patch("/api/profile/", {"strengths": {"age": 0.6}}, format="json").json()
    assert moved["vector_set"] == age.pk and moved["strengths"] == {"age": 0.6}
    # …the next answer is steered with it…
    answer = as_alice.post("/api/chat/", {"prompt": "Hello", "max_new_tokens": 3}, format="json").json()
    assert answer["vector_set"] == age.pk and answer["preferences_applied"] == {"age": 0.6}
    # …and calibration offers its dimensions.
    calibration = as_alice.get("/api/calibrate/start/", {"dimension": "age"})
    assert calibration.status_code == 200 and calibration.json()["vector_set"] == age.pk

    # The other set's profile is still there, read by naming it; bob's choice is his own.
    other = as_alice.get(f"/api/profile/?vector_set={default.pk}").json()
    assert other["chosen"] is False and sorted(_dimensions(other)) == ["cost", "formality"]
    assert as_bob.get("/api/profile/").json()["vector_set"] == default.pk

    # Choosing the default back: PUT with strengths on it, in the same request.
    back = as_alice.put("/api/profile/", {"vector_set": default.pk, "strengths": {"cost": -0.5}}, format="json").json()
    assert (back["vector_set"], back["strengths"]) == (default.pk, {"cost": -0.5})
    assert as_alice.post("/api/chat/", {"prompt": "Hi", "max_new_tokens": 2}, format="json").json()["vector_set"] == default.pk


def test_it_refuses_a_set_not_ready_for_another_model_or_another_users(as_alice, alice, bob, sets):
    default, age = sets
    as_alice.patch("/api/profile/", {"vector_set": age.pk}, format="json")
    pending = VectorSet.objects.create(name="computing", model_id=default.model_id, status=VectorSet.Status.PENDING)
    foreign = VectorSet.objects.create(name="other model", model_id="someone/other-model", status=VectorSet.Status.READY)
    bobs = VectorSet.objects.create(name="bob's", model_id=default.model_id, status=VectorSet.Status.READY, owner=bob)
    for vector_set, message in [
        (pending, "is pending, not ready"),
        (foreign, "is for model 'someone/other-model'"),
        (bobs, f"Vector set {bobs.pk} not found"),
        (10**9, "not found"),
    ]:
        pk = getattr(vector_set, "pk", vector_set)
        response = as_alice.patch("/api/profile/", {"vector_set": pk}, format="json")
        assert response.status_code == 400, (pk, response.json())
        assert message in response.json()["vector_set"][0]
    # A query naming another set than the body is refused too.
    clash = as_alice.patch(f"/api/profile/?vector_set={default.pk}", {"vector_set": age.pk}, format="json")
    assert clash.status_code == 400 and "the body" in clash.json()["vector_set"][0]
    assert as_alice.get("/api/profile/").json()["vector_set"] == age.pk  # nothing changed
    assert not PreferenceProfile.objects.filter(vector_set__in=[pending, foreign, bobs]).exists()


def test_a_chosen_set_taken_out_of_use_falls_back_to_the_default(as_alice, sets):
    default, age = sets
    as_alice.patch("/api/profile/", {"vector_set": age.pk}, format="json")
    VectorSet.objects.filter(pk=age.pk).update(status=VectorSet.Status.FAILED)
    assert as_alice.get("/api/profile/").json()["vector_set"] == default.pk
    answer = as_alice.post("/api/chat/", {"prompt": "Hello", "max_new_tokens": 2}, format="json").json()
    assert answer["vector_set"] == default.pk
