import pytest

from steering.models import PreferenceProfile, ProfileUpdate

pytestmark = pytest.mark.django_db


def test_a_new_user_reads_as_neutral_on_the_default_set(as_alice, shared_set):
    body = as_alice.get("/api/profile/").json()
    assert body["vector_set"] == shared_set.pk and body["strengths"] == {} and body["mode"] == "select"
    assert {d["name"]: d["summary"] for d in body["dimensions"]} == {"formality": "Neutral", "cost": "Neutral"}
    assert not PreferenceProfile.objects.exists()  # reading creates nothing


def test_patch_changes_only_what_it_names_and_records_history(as_alice, alice, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.5, "cost": -0.35}}, format="json")
    body = as_alice.patch("/api/profile/", {"strengths": {"formality": 0.8}, "mode": "learn"}, format="json").json()
    assert body["strengths"] == {"formality": 0.8, "cost": -0.35} and body["mode"] == "learn"
    assert {d["name"]: d["summary"] for d in body["dimensions"]} == {"formality": "80 % Formal", "cost": "35 % Budget"}
    history = as_alice.get("/api/profile/history/").json()["results"]
    assert [(h["dimension"], h["old_strength"], h["new_strength"], h["source"]) for h in history] == [
        ("formality", 0.5, 0.8, "api"),
        ("formality", 0.0, 0.5, "api"),
        ("cost", 0.0, -0.35, "api"),
    ]


def test_put_replaces_every_strength(as_alice, shared_set):
    as_alice.put("/api/profile/", {"strengths": {"formality": 0.5, "cost": 0.2}}, format="json")
    body = as_alice.put("/api/profile/", {"strengths": {"cost": -1}}, format="json").json()
    assert body["strengths"] == {"cost": -1.0}


@pytest.mark.parametrize(
    "strengths, message",
    [
        ({"formality": 1.5}, "between -1 and 1"),
        ({"formality": "nan"}, "valid number"),
        ({"formality": "-inf"}, "valid number"),
        ({"formality": True}, "valid number"),
        ({"sarcasm": 0.5}, "unknown dimension"),
        ("formal", "dictionary"),
    ],
)
def test_it_rejects_bad_strengths_and_changes_nothing(as_alice, shared_set, strengths, message):
    as_alice.patch("/api/profile/", {"strengths": {"cost": 0.3}}, format="json")
    response = as_alice.patch("/api/profile/", {"strengths": strengths}, format="json")
    assert response.status_code == 400
    assert message in str(response.json()).lower()
    assert as_alice.get("/api/profile/").json()["strengths"] == {"cost": 0.3}
    assert ProfileUpdate.objects.count() == 1


def test_a_profile_never_holds_a_dimension_its_set_lacks(alice, alices_set):
    with pytest.raises(ValueError, match="unknown dimension 'cost'"):
        PreferenceProfile.objects.create(user=alice, vector_set=alices_set, strengths={"cost": 0.5})
    assert not PreferenceProfile.objects.exists()


def test_profiles_are_per_user(as_alice, as_bob, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.9}}, format="json")
    assert as_bob.get("/api/profile/").json()["strengths"] == {}
    assert as_bob.get("/api/profile/history/").json()["results"] == []


def test_bob_cannot_read_or_write_a_profile_on_alices_set(as_alice, as_bob, alices_set):
    as_alice.patch(f"/api/profile/?vector_set={alices_set.pk}", {"strengths": {"formality": 0.4}}, format="json")
    assert as_bob.get(f"/api/profile/?vector_set={alices_set.pk}").status_code == 404
    response = as_bob.patch(f"/api/profile/?vector_set={alices_set.pk}", {"strengths": {"formality": 1}}, format="json")
    assert response.status_code == 404
    assert not PreferenceProfile.objects.filter(user__username="bob").exists()


def test_undo_puts_a_strength_back_and_only_for_its_owner(as_alice, as_bob, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.4}}, format="json")
    as_alice.patch("/api/profile/", {"strengths": {"formality": 0.9}}, format="json")
    latest = as_alice.get("/api/profile/history/").json()["results"][0]
    assert as_bob.post(f"/api/profile/history/{latest['id']}/undo/").status_code == 404
    response = as_alice.post(f"/api/profile/history/{latest['id']}/undo/")
    assert response.status_code == 200 and response.json()["undone"] is True
    assert as_alice.get("/api/profile/").json()["strengths"] == {"formality": 0.4}
    assert as_alice.post(f"/api/profile/history/{latest['id']}/undo/").status_code == 409


def test_without_a_default_set_it_says_so(as_alice, db):
    response = as_alice.get("/api/profile/")
    assert response.status_code == 404 and "default vector set" in response.json()["detail"]
    assert as_alice.get("/api/profile/?vector_set=abc").status_code == 400


def test_slider_changes_are_recorded_as_such(as_alice, shared_set):
    as_alice.patch("/api/profile/", {"strengths": {"cost": 0.2}, "source": "select"}, format="json")
    assert as_alice.get("/api/profile/history/").json()["results"][0]["source"] == "select"
    response = as_alice.patch("/api/profile/", {"strengths": {"cost": 0.1}, "source": "learn"}, format="json")
    assert response.status_code == 400  # learned and calibrated changes come from the platform only


@pytest.mark.parametrize("raw", ["²", "١٢", "1 ", "-1", "99999999999999999999999", "0x1"])
@pytest.mark.parametrize("url", ["/api/profile/", "/api/profile/history/", "/api/calibrate/start/?dimension=cost&"])
def test_it_answers_400_for_a_vector_set_id_that_is_not_a_plain_integer(as_alice, shared_set, url, raw):
    glue = "" if url.endswith("&") else "?"
    response = as_alice.get(f"{url}{glue}vector_set={raw}")
    assert response.status_code == 400, response.content
    assert "vector_set" in response.json()
