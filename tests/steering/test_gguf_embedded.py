"""A GGUF round trip on the real embedded model: export a computed dimension, import the file
as a new set, and the greedy text at each strength is the same as the source set's when the
source is on this server's residual norms (as every upload and import is: the import holds a
file to them); a computed set's own norms come back as this server's, its directions and range
unchanged."""

import io

import pytest
import torch
from rest_framework.test import APIClient

from steering.engine import GenerationParams, GenerationRequest
from steering.models import PreferenceDimension, VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.ws.conftest import formality_vectors  # noqa: F401  (a session fixture: computed once)

pytestmark = pytest.mark.slow

PROMPTS = ["How do I make a cup of tea?", "Can you recommend a good book?"]


def greedy_texts(vector_set, dimension, strength):
    vectors = runtime.site_vectors(vector_set)
    params = GenerationParams(max_new_tokens=24, temperature=0.0)
    requests = [GenerationRequest(prompt_ids=runtime.site_model().chat_ids(p), params=params,
                                  steering=vectors.layer_deltas({dimension: strength})) for p in PROMPTS]
    return runtime.site_generate(requests)


def test_export_then_import_keeps_the_greedy_text(db, alice, settings, tmp_path, formality_vectors):  # noqa: F811
    settings.MEDIA_ROOT = tmp_path / "media"
    PreferenceDimension.objects.create(name="formality", negative_label="Casual", positive_label="Formal")
    source = vector_sets.vector_set_register(
        vectors=formality_vectors.with_residual_norms(runtime.site_residual_norms()), name="default")
    client = APIClient()
    client.force_authenticate(alice)
    exported = client.get(f"/api/vector-sets/{source.pk}/export.gguf?dimension=formality&strength=1")
    assert exported.status_code == 200
    file = io.BytesIO(exported.content)
    file.name = "formality.gguf"
    response = client.post("/api/vector-sets/import-gguf/", {"name": "round trip", "file": file,
                                                             "dimension": "formality-gguf"}, format="multipart")
    assert response.status_code == 201, response.content
    back = VectorSet.objects.get(pk=response.json()["id"])
    assert back.layers == [layer for layer in source.layers if layer >= 1]
    for strength in (-1.0, 1.0):
        assert greedy_texts(back, "formality-gguf", strength) == greedy_texts(source, "formality", strength)
    assert greedy_texts(source, "formality", 1.0) != greedy_texts(source, "formality", -1.0)


def test_a_computed_set_comes_back_with_its_directions_and_range(db, alice, settings, tmp_path,
                                                               formality_vectors):  # noqa: F811
    settings.MEDIA_ROOT = tmp_path / "media"
    source = vector_sets.vector_set_register(vectors=formality_vectors, name="computed")
    client = APIClient()
    client.force_authenticate(alice)
    file = io.BytesIO(client.get(f"/api/vector-sets/{source.pk}/export.gguf?dimension=formality").content)
    file.name = "formality.gguf"
    response = client.post("/api/vector-sets/import-gguf/", {"name": "back", "file": file,
                                                             "dimension": "formality-gguf"}, format="multipart")
    assert response.status_code == 201, response.content
    back = runtime.site_vectors(VectorSet.objects.get(pk=response.json()["id"]))
    assert back.functional_range["formality-gguf"] == pytest.approx(formality_vectors.functional_range["formality"])
    norms = runtime.site_residual_norms()
    for layer, delta in back.layer_deltas({"formality-gguf": 1.0}).items():
        original = formality_vectors.layer_deltas({"formality": 1.0})[layer]
        assert float(torch.nn.functional.cosine_similarity(delta, original, dim=0)) == pytest.approx(1.0, abs=1e-5)
        assert float(delta.norm()) == pytest.approx(back.functional_range["formality-gguf"] * float(norms[layer]), rel=1e-4)
