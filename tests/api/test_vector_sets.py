import io

import pytest
from safetensors.torch import save

from steering.engine import SteeringVectors
from steering.models import VectorSet
from tests.api.conftest import make_vectors

pytestmark = pytest.mark.django_db


def _file_bytes(vectors: SteeringVectors, tmp_path) -> bytes:
    return vectors.save(tmp_path / "v.safetensors").read_bytes()


def _media_files(settings):
    root = settings.MEDIA_ROOT
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_it_lists_shared_and_own_sets_only(as_alice, as_bob, shared_set, alices_set):
    names = lambda client: {v["name"] for v in client.get("/api/vector-sets/").json()["results"]}
    assert names(as_alice) == {"shared", "alice's"}
    assert names(as_bob) == {"shared"}


def test_it_shows_detail_with_status_and_progress(as_alice, alices_set):
    body = as_alice.get(f"/api/vector-sets/{alices_set.pk}/").json()
    assert body["status"] == "ready" and body["progress"] == 100
    assert body["dimensions"] == ["formality"] and body["shared"] is False and body["owner"] == "alice"
    assert body["download_url"].endswith(f"/api/vector-sets/{alices_set.pk}/download/")
    # Each end's range: functional_range towards the positive end, negative_range where the
    # negative end's differs.
    assert body["negative_range"] == {}
    alices_set.negative_range = {"formality": 0.01}
    alices_set.save()
    assert as_alice.get(f"/api/vector-sets/{alices_set.pk}/").json()["negative_range"] == {"formality": 0.01}


def test_bob_gets_404_on_alices_set_everywhere(as_bob, alices_set):
    for method, url in [
        ("get", f"/api/vector-sets/{alices_set.pk}/"),
        ("get", f"/api/vector-sets/{alices_set.pk}/download/"),
        ("delete", f"/api/vector-sets/{alices_set.pk}/"),
        ("post", f"/api/vector-sets/{alices_set.pk}/compute/"),
    ]:
        assert getattr(as_bob, method)(url).status_code == 404, url
    assert VectorSet.objects.filter(pk=alices_set.pk).exists()


def test_it_downloads_the_file(as_alice, alices_set):
    response = as_alice.get(f"/api/vector-sets/{alices_set.pk}/download/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    data = b"".join(response.streaming_content)
    assert data == alices_set.file.open("rb").read()


def test_it_starts_a_private_computation(as_alice, alice, dimensions, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = as_alice.post("/api/vector-sets/", {"name": "mine", "dimensions": ["cost"]}, format="json")
    assert response.status_code == 202, response.json()
    vector_set = VectorSet.objects.get(pk=response.json()["id"])
    assert vector_set.owner == alice and vector_set.status == "pending"
    assert [d.name for d in vector_set.dimensions.all()] == ["cost"]
    assert len(callbacks) == 1  # the task is queued once the row is committed


def test_it_records_the_method_and_top_k_asked_for(as_alice, dimensions, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = as_alice.post(
            "/api/vector-sets/", {"name": "k", "dimensions": ["cost"], "method": "probe", "top_k": 8}, format="json"
        )
    assert response.status_code == 202, response.json()
    assert (response.json()["method"], response.json()["top_k"]) == ("probe", 8)
    assert VectorSet.objects.get().top_k == 8


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "x", "dimensions": ["nope"]}, "dimensions"),
        ({"name": "x", "dimensions": []}, "dimensions"),
        ({"name": "x", "dimensions": ["cost"], "method": "magic"}, "method"),
        ({"name": "x", "dimensions": ["cost"], "top_k": 0}, "top_k"),
        ({"dimensions": ["cost"]}, "name"),
    ],
)
def test_it_rejects_bad_computations(as_alice, dimensions, payload, field):
    response = as_alice.post("/api/vector-sets/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not VectorSet.objects.exists()


def test_only_staff_create_shared_sets(as_bob, as_charlie, dimensions):
    payload = {"name": "s", "dimensions": ["cost"], "shared": True}
    assert as_bob.post("/api/vector-sets/", payload, format="json").status_code == 403
    assert not VectorSet.objects.exists()
    response = as_charlie.post("/api/vector-sets/", payload, format="json")
    assert response.status_code == 202 and response.json()["shared"] is True


def test_only_staff_delete_shared_sets(as_alice, as_charlie, shared_set, settings, django_capture_on_commit_callbacks):
    assert as_alice.delete(f"/api/vector-sets/{shared_set.pk}/").status_code == 403
    assert VectorSet.objects.filter(pk=shared_set.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_charlie.delete(f"/api/vector-sets/{shared_set.pk}/")
    assert response.status_code == 204
    assert not VectorSet.objects.filter(pk=shared_set.pk).exists()
    assert _media_files(settings) == []


def test_owner_deletes_own_set_and_its_file(as_alice, alices_set, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert as_alice.delete(f"/api/vector-sets/{alices_set.pk}/").status_code == 204
    assert _media_files(settings) == []


def test_recompute_is_refused_while_pending(as_alice, alices_set):
    VectorSet.objects.filter(pk=alices_set.pk).update(status="running")
    response = as_alice.post(f"/api/vector-sets/{alices_set.pk}/compute/")
    assert response.status_code == 409 and "already" in response.json()["detail"]


@pytest.mark.slow
def test_it_accepts_a_valid_upload(as_alice, alice, tmp_path, dimensions):
    data = _file_bytes(make_vectors(["formality"], seed=3), tmp_path)
    upload = io.BytesIO(data)
    upload.name = "f.safetensors"
    response = as_alice.post("/api/vector-sets/upload/", {"name": "up", "file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    vector_set = VectorSet.objects.get(pk=response.json()["id"])
    assert vector_set.owner == alice and vector_set.is_ready
    assert SteeringVectors.load(vector_set.file.path).dimensions == ["formality"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a safetensors file", "safetensors"),
        ("wrong-hidden", "hidden"),
        ("wrong-model", "model"),
        ("nan", "non-finite"),
    ],
)
def test_it_rejects_bad_uploads_and_keeps_nothing(as_alice, tmp_path, settings, dimensions, content, message):
    if content == "wrong-hidden":
        content = _file_bytes(make_vectors(["formality"], hidden=64), tmp_path)
    elif content == "wrong-model":
        content = _file_bytes(make_vectors(["formality"], model_id="someone/else"), tmp_path)
    elif content == "nan":
        vectors = make_vectors(["formality"])
        tensors = {"vector.formality": vectors.vectors["formality"].clone(), "residual_norms": vectors.residual_norms}
        tensors["vector.formality"][3, 5] = float("nan")
        import json

        meta = {k: json.dumps(v) for k, v in {
            "model_id": vectors.model_id, "hidden_size": 576, "num_layers": 30, "layers": vectors.layers,
            "dimensions": ["formality"], "functional_range": {"formality": 0.02},
        }.items()}
        content = save(tensors, metadata=meta)
    upload = io.BytesIO(content)
    upload.name = "bad.safetensors"
    response = as_alice.post("/api/vector-sets/upload/", {"name": "bad", "file": upload}, format="multipart")
    assert response.status_code == 400
    assert message in response.json()["file"][0].lower()
    assert not VectorSet.objects.exists()
    assert _media_files(settings) == []


def test_it_rejects_an_oversized_upload(as_alice, settings):
    settings.STEERLAB_MAX_UPLOAD_BYTES = 1024
    upload = io.BytesIO(b"x" * 2048)
    upload.name = "big.safetensors"
    response = as_alice.post("/api/vector-sets/upload/", {"name": "big", "file": upload}, format="multipart")
    assert response.status_code == 400 and "limit" in response.json()["file"][0]
    assert not VectorSet.objects.exists()


def test_only_staff_upload_shared_sets(as_bob):
    upload = io.BytesIO(b"whatever")
    upload.name = "s.safetensors"
    response = as_bob.post("/api/vector-sets/upload/", {"name": "s", "file": upload, "shared": True}, format="multipart")
    assert response.status_code == 403


def test_dimensions_are_listed_with_example_counts(as_bob, dimensions):
    body = as_bob.get("/api/dimensions/").json()
    formality = next(d for d in body["results"] if d["name"] == "formality")
    assert formality["negative_label"] == "Casual" and formality["examples"]["positive"] >= 60
    assert as_bob.get("/api/dimensions/cost/").json()["positive_label"] == "Luxury"
    assert as_bob.get("/api/dimensions/nope/").status_code == 404


def test_anonymous_calls_are_refused(client, shared_set):
    for url in ["/api/vector-sets/", "/api/dimensions/", "/api/profile/", "/api/interactions/"]:
        assert client.get(url).status_code == 401, url


def test_computations_are_throttled_per_user(as_alice, as_bob, dimensions, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"compute": "2/hour", "chat": "100/min"})
    payload = {"name": "x", "dimensions": ["cost"]}
    assert [as_alice.post("/api/vector-sets/", payload, format="json").status_code for _ in range(3)] == [202, 202, 429]
    assert VectorSet.objects.filter(owner__username="alice").count() == 2
    assert as_bob.post("/api/vector-sets/", payload, format="json").status_code == 202  # bob has his own budget


def test_computed_sets_count_against_the_set_quota(as_alice, as_bob, alices_set, dimensions, settings,
                                                    django_capture_on_commit_callbacks):
    settings.STEERLAB_UPLOAD_MAX_SETS = 2
    payload = {"name": "x", "dimensions": ["cost"]}
    with django_capture_on_commit_callbacks() as queued:
        assert as_alice.post("/api/vector-sets/", payload, format="json").status_code == 202  # her second set
        refused = as_alice.post("/api/vector-sets/", payload, format="json")
    assert refused.status_code == 400 and "2 vector sets" in refused.json()["detail"]
    assert len(queued) == 1  # no job for the refused one
    assert VectorSet.objects.filter(owner__username="alice").count() == 2
    assert as_bob.post("/api/vector-sets/", payload, format="json").status_code == 202
    # A recomputation adds no set: still allowed at the quota.
    assert as_alice.post(f"/api/vector-sets/{alices_set.pk}/compute/").status_code == 202
