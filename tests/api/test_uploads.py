"""POST /api/vector-sets/upload/ on the tiny site: what an upload may claim and what it may not.
Malformed metadata is a 400 with a message; the file's residual norms give way to the ones this
server measures; functional ranges have a ceiling; an upload's dimensions are its own; each
user has a quota of sets and bytes. A refused upload leaves nothing behind."""

import io
import json

import pytest
import torch
from safetensors.torch import save

from steering.engine import SteeringVectors
from steering.models import PreferenceDimension, VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors
from tests.tiny_models import NUM_LAYERS

pytestmark = pytest.mark.django_db

TINY_HIDDEN = 64


def _vectors(dims=("formality",), **options):
    return make_vectors(list(dims), model_id=runtime.site_model_id(), hidden=TINY_HIDDEN, layers=NUM_LAYERS, **options)


def _upload(client, content: bytes, name="up"):
    upload = io.BytesIO(content)
    upload.name = "v.safetensors"
    return client.post("/api/vector-sets/upload/", {"name": name, "file": upload}, format="multipart")


def _bytes(vectors: SteeringVectors, tmp_path) -> bytes:
    return vectors.save(tmp_path / "v.safetensors").read_bytes()


def _raw_file(**meta_changes) -> bytes:
    """A tiny-model vector file with its metadata changed as given (JSON values)."""
    vectors = _vectors()
    meta = {
        "model_id": vectors.model_id, "hidden_size": TINY_HIDDEN, "num_layers": NUM_LAYERS, "layers": vectors.layers,
        "dimensions": ["formality"], "functional_range": {"formality": 0.02},
        "labels": {"formality": ["casual", "formal"]}, **meta_changes,
    }
    tensors = {"vector.formality": vectors.vectors["formality"], "residual_norms": vectors.residual_norms}
    return save(tensors, metadata={key: json.dumps(value) for key, value in meta.items()})


def _dimension_names(client) -> list[str]:
    body = client.get("/api/dimensions/").json()
    return [d["name"] for d in (body["results"] if isinstance(body, dict) else body)]


def _nothing_kept(settings):
    media = settings.MEDIA_ROOT
    assert not VectorSet.objects.exists()
    assert not (media.exists() and any(p.is_file() for p in media.rglob("*")))


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"dimensions": 5}, "dimensions must be a list"),
        ({"labels": []}, "labels must be an object"),
        ({"labels": {"formality": []}}, "labels of 'formality'"),
        ({"labels": {"formality": ["casual", "x" * 500]}}, "labels of 'formality'"),
        ({"functional_range": "wide"}, "functional_range must be an object"),
        ({"layers": {"a": 1}}, "layers must be a list"),
        ({"hidden_size": None}, "hidden_size must be an integer"),
    ],
)
def test_it_answers_400_for_malformed_metadata_and_keeps_nothing(tiny_site, as_alice, settings, meta, message):
    response = _upload(as_alice, _raw_file(**meta))
    assert response.status_code == 400, response.content
    assert message in response.json()["file"][0]
    _nothing_kept(settings)


@pytest.mark.parametrize("name", ["Bad Name", "x" * 51, "../../etc"])
def test_it_refuses_dimension_names_that_are_not_short_slugs(tiny_site, as_alice, settings, name):
    vectors = _vectors()
    tensors = {f"vector.{name}": vectors.vectors["formality"], "residual_norms": vectors.residual_norms}
    meta = {"model_id": vectors.model_id, "hidden_size": TINY_HIDDEN, "num_layers": NUM_LAYERS, "layers": vectors.layers,
            "dimensions": [name], "functional_range": {name: 0.02}}
    response = _upload(as_alice, save(tensors, metadata={k: json.dumps(v) for k, v in meta.items()}))
    assert response.status_code == 400 and "dimension name" in response.json()["file"][0]
    _nothing_kept(settings)


def test_the_files_residual_norms_give_way_to_the_ones_this_server_measures(tiny_site, as_alice, tmp_path):
    vectors = _vectors()
    huge = vectors.with_residual_norms(torch.full((NUM_LAYERS,), 1e30))
    response = _upload(as_alice, _bytes(huge, tmp_path))
    assert response.status_code == 201, response.json()
    stored = SteeringVectors.load(VectorSet.objects.get().file.path)
    measured = runtime.site_residual_norms()
    assert torch.equal(stored.residual_norms, measured)
    assert torch.isfinite(measured).all() and 0 < measured.max() < 1e3
    # A strength of 1 now adds ceiling-bounded amounts, whatever the file claimed.
    delta = stored.layer_deltas({"formality": 1.0})
    assert max(d.norm() for d in delta.values()) <= 0.02 * measured.max() * 1.001


def test_functional_ranges_above_the_ceiling_are_refused(tiny_site, as_alice, settings, tmp_path):
    settings.STEERLAB_MAX_FUNCTIONAL_RANGE = 0.5
    response = _upload(as_alice, _bytes(_vectors(range_=1e30), tmp_path))
    assert response.status_code == 400
    assert "ceiling of 0.5" in response.json()["file"][0] and "formality 1e+30" in response.json()["file"][0]
    _nothing_kept(settings)
    assert _upload(as_alice, _bytes(_vectors(range_=0.5), tmp_path)).status_code == 201


def test_a_negative_side_above_the_ceiling_is_refused_too(tiny_site, as_alice, settings, tmp_path):
    settings.STEERLAB_MAX_FUNCTIONAL_RANGE = 0.5
    wide = _vectors(range_=0.02).with_ranges({"formality": 0.02}, negative={"formality": 1e30})
    response = _upload(as_alice, _bytes(wide, tmp_path))
    assert response.status_code == 400 and "formality 1e+30" in response.json()["file"][0]
    _nothing_kept(settings)


def test_an_upload_may_bring_only_so_many_dimensions(tiny_site, as_alice, settings, tmp_path):
    settings.STEERLAB_UPLOAD_MAX_DIMENSIONS = 2
    response = _upload(as_alice, _bytes(_vectors(["a", "b", "c"]), tmp_path))
    assert response.status_code == 400 and "at most 2" in response.json()["file"][0]
    _nothing_kept(settings)
    assert _upload(as_alice, _bytes(_vectors(["a", "b"]), tmp_path)).status_code == 201


def test_an_uploads_dimensions_are_private_to_its_set(tiny_site, as_alice, as_bob, alice, dimensions, tmp_path):
    shared_formality = PreferenceDimension.objects.get(name="formality")
    vectors = _vectors(["formality", "sarcasm", "time"])
    vectors.labels = {"formality": ["yo", "sir"], "sarcasm": ["sincere", "snarky"], "time": ["never", "always"]}
    response = _upload(as_alice, _bytes(vectors, tmp_path))
    assert response.status_code == 201, response.json()
    vector_set = VectorSet.objects.get(pk=response.json()["id"])
    assert sorted(response.json()["dimensions"]) == ["formality", "sarcasm", "time"]

    for client in (as_alice, as_bob):
        listed = _dimension_names(client)
        assert "sarcasm" not in listed and listed.count("formality") == 1
        assert client.get("/api/dimensions/sarcasm/").status_code == 404
        assert client.get("/api/dimensions/formality/").json()["positive_label"] == shared_formality.positive_label
    shared_formality.refresh_from_db()
    assert shared_formality.negative_label != "yo" and not shared_formality.vector_sets.filter(pk=vector_set.pk).exists()
    # The catalogue's names stay free: a shipped dimension the upload named first (time) still
    # imports as a shared one, with its own labels.
    assert vector_sets.dimension_import_default(name="formality").pk == shared_formality.pk
    time = vector_sets.dimension_import_default(name="time")
    assert time.private_to is None and time.negative_label != "never" and time.positive_examples

    labels = {d.name: (d.negative_label, d.positive_label) for d in vector_set.dimensions.all()}
    assert labels == {"formality": ("yo", "sir"), "sarcasm": ("sincere", "snarky"), "time": ("never", "always")}
    vector_set.delete()
    assert not PreferenceDimension.objects.filter(name="sarcasm").exists()
    assert PreferenceDimension.objects.filter(pk=shared_formality.pk).exists()


def test_a_staff_upload_of_a_shared_set_uses_the_shared_dimensions(tiny_site, as_charlie, dimensions, tmp_path):
    upload = io.BytesIO(_bytes(_vectors(["formality", "sarcasm"]), tmp_path))
    upload.name = "v.safetensors"
    response = as_charlie.post(
        "/api/vector-sets/upload/", {"name": "s", "file": upload, "shared": True}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    vector_set = VectorSet.objects.get(pk=response.json()["id"])
    formality, sarcasm = vector_set.dimensions.order_by("name")
    assert formality.private_to is None and sarcasm.private_to == vector_set
    assert "sarcasm" not in _dimension_names(as_charlie)


def test_each_user_may_upload_only_so_many_sets(tiny_site, as_alice, as_bob, settings, tmp_path):
    settings.STEERLAB_UPLOAD_MAX_SETS = 2
    content = _bytes(_vectors(), tmp_path)
    assert [_upload(as_alice, content).status_code for _ in range(2)] == [201, 201]
    refused = _upload(as_alice, content)
    assert refused.status_code == 400 and "2 vector sets" in refused.json()["detail"]
    assert VectorSet.objects.count() == 2
    assert len(list(settings.MEDIA_ROOT.rglob("*.safetensors"))) == 2
    assert _upload(as_bob, content).status_code == 201  # a quota per user


def test_each_user_may_store_only_so_many_bytes(tiny_site, as_alice, as_bob, settings, tmp_path):
    content = _bytes(_vectors(), tmp_path)
    settings.STEERLAB_UPLOAD_QUOTA_BYTES = int(len(content) * 1.5)
    assert _upload(as_alice, content).status_code == 201
    refused = _upload(as_alice, content)
    assert refused.status_code == 400 and f"one user may have {settings.STEERLAB_UPLOAD_QUOTA_BYTES}" in refused.json()["detail"]
    assert VectorSet.objects.count() == 1
    assert len(list(settings.MEDIA_ROOT.rglob("*.safetensors"))) == 1
    assert _upload(as_bob, content).status_code == 201
