"""GGUF control vectors through the API and the management commands, on the tiny site model:
export (who may, which parameters), import (validated, range measured, nothing stored when
bad), and a round trip that keeps the steering."""

from __future__ import annotations

import io
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError
from django_q.models import OrmQ

from steering.engine import GenerationParams, GenerationRequest
from steering.engine.controlvector import control_vector_from, read_control_vector, write_control_vector
from steering.engine.range_search import RANGE_CANDIDATES
from steering.models import VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors


@pytest.fixture
def tiny_sets(tiny_site, alice, dimensions):
    loaded = runtime.site_model()
    shape = dict(hidden=loaded.hidden_size, layers=loaded.num_layers)
    # On this server's residual norms, as every set that comes from outside is: then an
    # export imported again steers exactly as its source.
    shared = vector_sets.vector_set_register(name="shared", vectors=make_vectors(
        ["formality", "cost"], range_=0.5, **shape).with_residual_norms(runtime.site_residual_norms()))
    private = vector_sets.vector_set_register(vectors=make_vectors(["formality"], seed=1, range_=0.5, **shape),
                                           name="alice's", owner=alice)
    return shared, private


def gguf_bytes(directions: dict[int, np.ndarray], tmp_path, hint="llama") -> bytes:
    path = tmp_path / "x.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    for layer, v in directions.items():
        writer.add_tensor(f"direction.{layer}", v.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def upload(content: bytes, name="x.gguf"):
    file = io.BytesIO(content)
    file.name = name
    return file


def greedy(vector_set, dimension, strength, prompt="Tell me about tea."):
    vectors = runtime.site_vectors(vector_set)
    request = GenerationRequest(prompt_ids=runtime.site_model().chat_ids(prompt),
                                params=GenerationParams(max_new_tokens=12, temperature=0.0),
                                steering=vectors.layer_deltas({dimension: strength}))
    return runtime.site_generate([request])[0]


def test_it_exports_a_dimension_at_a_strength(tiny_sets, as_alice, tmp_path):
    shared, _ = tiny_sets
    response = as_alice.get(f"/api/vector-sets/{shared.pk}/export.gguf?dimension=cost&strength=-0.5")
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith(f'filename="vector-set-{shared.pk}-cost-0.5.gguf"')
    (tmp_path / "got.gguf").write_bytes(response.content)
    control = read_control_vector(tmp_path / "got.gguf")
    deltas = runtime.site_vectors(shared).layer_deltas({"cost": -0.5})
    assert control.layers == sorted(layer for layer in deltas if layer >= 1)
    assert all(torch.allclose(control.directions[k], deltas[k]) for k in control.layers)
    assert control.model_hint == "llama" and control.metadata["steerlab.dimension"] == "cost"


def test_export_rules_who_and_what(tiny_sets, as_alice, as_bob):
    shared, private = tiny_sets
    assert as_bob.get(f"/api/vector-sets/{private.pk}/export.gguf").status_code == 404
    assert as_alice.get(f"/api/vector-sets/{private.pk}/export.gguf").status_code == 200  # one dimension: implied
    assert as_bob.get(f"/api/vector-sets/{shared.pk}/export.gguf?dimension=cost").status_code == 200
    for query in ("", "?dimension=nope", "?dimension=cost&strength=0", "?dimension=cost&strength=2",
                  "?dimension=cost&strength=nan", "?dimension=cost&strength=x"):
        response = as_bob.get(f"/api/vector-sets/{shared.pk}/export.gguf{query}")
        assert response.status_code == 400, query


def test_it_imports_a_foreign_file_and_measures_its_range_in_the_background(
    tiny_sets, as_alice, alice, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.STEERLAB_RANGE_SEARCH = True
    hidden = runtime.site_model().hidden_size
    rng = np.random.default_rng(0)
    content = gguf_bytes({1: rng.standard_normal(hidden), 2: rng.standard_normal(hidden)}, tmp_path)
    with django_capture_on_commit_callbacks() as queued:
        response = as_alice.post("/api/vector-sets/import-gguf/", {
            "name": "from repeng", "file": upload(content), "dimension": "mood",
            "negative_label": "Gloomy", "positive_label": "Cheerful",
        }, format="multipart")
    # The request only reads and checks the file; the range search is a job, as computing is.
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["progress"] == 0 and len(queued) == 1
    assert as_alice.get(f"/api/vector-sets/{body['id']}/").json()["status"] == "pending"
    reports = []
    vector_set = vector_sets.vector_set_compute(vector_set=VectorSet.objects.get(pk=body["id"]),
                                                loaded=runtime.site_model(), report=reports.append)
    assert reports and reports == sorted(reports) and reports[-1] <= 99  # progress, as a computed set's
    vector_set.refresh_from_db()
    assert vector_set.is_ready and vector_set.progress == 100
    assert vector_set.owner == alice and vector_set.layers == [1, 2]
    assert vector_set.dimension_names() == ["mood"]
    vectors = runtime.site_vectors(vector_set)
    assert vectors.labels["mood"] == ["Gloomy", "Cheerful"]
    # Measured: one of the search's candidates (or 0 when none keeps the text fluent), not
    # the file's own scale.
    assert vector_set.functional_range["mood"] in (0.0, *RANGE_CANDIDATES)


@pytest.mark.parametrize("problem, words", [
    ("hidden", "hidden size"),
    ("layers", "do not exist"),
    ("zero", "zero"),
    ("garbage", "readable GGUF"),
])
def test_a_bad_file_is_a_400_that_stores_nothing(tiny_sets, as_alice, tmp_path, problem, words, settings):
    loaded = runtime.site_model()
    hidden, layers = loaded.hidden_size, loaded.num_layers
    content = {
        "hidden": lambda: gguf_bytes({1: np.ones(hidden + 1)}, tmp_path),
        "layers": lambda: gguf_bytes({layers: np.ones(hidden)}, tmp_path),
        "zero": lambda: gguf_bytes({0: np.ones(hidden)}, tmp_path),
        "garbage": lambda: b"GGUF" + b"\x00" * 40,
    }[problem]()
    before = VectorSet.objects.count()
    files = sorted((settings.MEDIA_ROOT / "vectors").iterdir())
    response = as_alice.post("/api/vector-sets/import-gguf/", {"name": "bad", "file": upload(content),
                                                               "dimension": "mood"}, format="multipart")
    assert response.status_code == 400 and words in str(response.json()["file"])
    assert VectorSet.objects.count() == before
    assert sorted((settings.MEDIA_ROOT / "vectors").iterdir()) == files


def test_only_staff_import_shared_sets(tiny_sets, as_bob, tmp_path):
    content = gguf_bytes({1: np.ones(runtime.site_model().hidden_size)}, tmp_path)
    response = as_bob.post("/api/vector-sets/import-gguf/", {"name": "s", "file": upload(content), "dimension": "d",
                                                             "shared": True}, format="multipart")
    assert response.status_code == 403


def test_a_round_trip_keeps_the_greedy_text(tiny_sets, as_alice, tmp_path):
    shared, _ = tiny_sets
    exported = as_alice.get(f"/api/vector-sets/{shared.pk}/export.gguf?dimension=formality&strength=1")
    content = exported.content
    response = as_alice.post("/api/vector-sets/import-gguf/", {"name": "back", "file": upload(content),
                                                               "dimension": "formality-back"}, format="multipart")
    assert response.status_code == 201, response.content
    back = VectorSet.objects.get(pk=response.json()["id"])
    assert back.functional_range["formality-back"] == pytest.approx(shared.functional_range["formality"])
    for strength in (1.0, -0.5):
        assert greedy(back, "formality-back", strength) == greedy(shared, "formality", strength)
    assert greedy(shared, "formality", 1.0) != greedy(shared, "formality", 0.0)
    assert runtime.site_vectors(back).labels["formality-back"] == ["formality-low", "formality-high"]


def test_the_commands_export_and_load_gguf(tiny_sets, tmp_path, capsys):
    shared, _ = tiny_sets
    target = tmp_path / "cost.gguf"
    call_command("export_vectors", str(shared.pk), "--format", "gguf", "--dimension", "cost", "--strength", "0.5",
                 "-o", str(target))
    assert "control-vector-scaled" in capsys.readouterr().out
    assert read_control_vector(target).metadata["steerlab.strength"] == 0.5
    call_command("load_vectors", str(target), "--dimension", "budget", "--name", "cost again")
    loaded_set = VectorSet.objects.get(name="cost again")
    assert loaded_set.dimension_names() == ["budget"]
    # The file records its strength and range: the set it becomes steers as its source does,
    # strength for strength.
    for strength in (0.5, 1.0):
        assert greedy(loaded_set, "budget", strength) == greedy(shared, "cost", strength)
        imported = runtime.site_vectors(loaded_set).layer_deltas({"budget": strength})
        source = runtime.site_vectors(shared).layer_deltas({"cost": strength})
        assert all(torch.allclose(imported[k], source[k], rtol=1e-4) for k in imported)
    with pytest.raises(CommandError, match="--dimension"):
        call_command("export_vectors", str(shared.pk), "--format", "gguf")
    with pytest.raises(CommandError, match="--dimension"):
        call_command("load_vectors", str(target))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(CommandError, match="readable GGUF"):
        call_command("load_vectors", str(bad), "--dimension", "x")


def steerlab_file(tmp_path, *, strength=1.0, range_=0.5, scale=1.0, model_id=None, **metadata) -> bytes:
    """A file in SteerLab's format claiming this server's model (or `model_id`), its recorded
    strength, range and labels replaced as a hostile user would, its values × `scale`."""
    loaded = runtime.site_model()
    vectors = make_vectors(["mood"], hidden=loaded.hidden_size, layers=loaded.num_layers, range_=range_,
                           model_id=model_id)
    control = control_vector_from(vectors, "mood", 1.0, model_hint="llama")
    control.directions = {layer: v * scale for layer, v in control.directions.items()}
    control.metadata.update({"steerlab.strength": strength, **metadata})
    for key in [k for k, v in control.metadata.items() if v is None]:
        del control.metadata[key]
    return write_control_vector(control, tmp_path / "steerlab.gguf").read_bytes()


def import_(client, content, dimension="mood", **fields):
    return client.post("/api/vector-sets/import-gguf/", {"name": "imported", "file": upload(content),
                                                         "dimension": dimension, **fields}, format="multipart")


def test_a_steerlab_file_for_this_model_is_held_to_the_range_ceiling(tiny_site, as_alice, tmp_path, settings):
    settings.STEERLAB_MAX_FUNCTIONAL_RANGE = 1.0
    response = import_(as_alice, steerlab_file(tmp_path, range_=5.0, strength=1.0))
    assert response.status_code == 400
    assert "ceiling of 1" in str(response.json()["file"]) and "mood 5" in str(response.json()["file"])
    assert not VectorSet.objects.exists()


def test_a_steerlab_file_for_this_model_gets_this_servers_norms(tiny_site, as_alice, tmp_path):
    # Values of 1e15 claim enormous residual norms; the set adds what the server's norms allow.
    response = import_(as_alice, steerlab_file(tmp_path, range_=0.5, scale=1e15))
    assert response.status_code == 201, response.content
    vector_set = VectorSet.objects.get(pk=response.json()["id"])
    deltas = runtime.site_vectors(vector_set).layer_deltas({"mood": 1.0})
    norms = runtime.site_residual_norms()
    assert deltas and all(float(delta.norm()) == pytest.approx(0.5 * float(norms[layer]), rel=1e-4)
                          for layer, delta in deltas.items())


def test_a_steerlab_file_for_another_model_is_measured_like_a_foreign_one(tiny_site, as_alice, tmp_path):
    response = import_(as_alice, steerlab_file(tmp_path, range_=5.0, model_id="someone/else"))
    assert response.status_code == 202 and response.json()["status"] == "pending"


@pytest.mark.parametrize("metadata, words", [
    ({"strength": 0.0}, "steerlab.strength must be a non-zero finite number"),
    ({"strength": None}, "not missing"),
    ({"strength": "strong"}, "not 'strong'"),
    ({"range_": 0.5, "steerlab.functional_range": "wide"}, "steerlab.functional_range"),
    ({"steerlab.labels": ["x" * 61, "fine"]}, "negative label recorded in the file"),
])
def test_a_malformed_steerlab_file_is_a_400_with_a_message(tiny_site, as_alice, tmp_path, settings, metadata, words):
    response = import_(as_alice, steerlab_file(tmp_path, **metadata))
    assert response.status_code == 400, response.content
    assert words in str(response.json()["file"])
    assert not VectorSet.objects.exists() and not list(settings.MEDIA_ROOT.rglob("*.safetensors"))


def test_labels_over_60_characters_are_refused_from_the_caller_too(tiny_site, as_alice, tmp_path):
    content = gguf_bytes({1: np.ones(runtime.site_model().hidden_size)}, tmp_path)
    response = import_(as_alice, content, positive_label="y" * 61)
    assert response.status_code == 400 and "positive_label" in response.json()
    # A label the file records may be replaced by the caller's.
    response = import_(as_alice, steerlab_file(tmp_path, **{"steerlab.labels": ["x" * 61, "fine"]}),
                       negative_label="Calm")
    assert response.status_code == 201, response.content


def test_an_import_at_the_set_quota_is_a_400(tiny_site, as_alice, as_bob, tmp_path, settings):
    settings.STEERLAB_UPLOAD_MAX_SETS = 1
    content = steerlab_file(tmp_path)
    assert import_(as_alice, content).status_code == 201
    refused = import_(as_alice, content, dimension="mood-2")
    assert refused.status_code == 400 and "1 vector sets" in refused.json()["detail"]
    foreign = import_(as_alice, gguf_bytes({1: np.ones(runtime.site_model().hidden_size)}, tmp_path), dimension="m3")
    assert foreign.status_code == 400 and "1 vector sets" in foreign.json()["detail"]
    assert VectorSet.objects.count() == 1 and len(list(settings.MEDIA_ROOT.rglob("*.safetensors"))) == 1
    assert import_(as_bob, content).status_code == 201


def test_load_vectors_measures_a_foreign_file_before_it_returns(tiny_site, db, tmp_path, settings, capsys,
                                                               django_capture_on_commit_callbacks):
    settings.STEERLAB_RANGE_SEARCH = True
    path = tmp_path / "repeng.gguf"
    path.write_bytes(gguf_bytes({1: np.random.default_rng(1).standard_normal(runtime.site_model().hidden_size)}, tmp_path))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_vectors", str(path), "--dimension", "mood", "--name", "from repeng")
    vector_set = VectorSet.objects.get(name="from repeng")
    assert vector_set.is_ready and not OrmQ.objects.exists()  # measured here, not queued for a worker
    # The file before its range was measured is gone: one file, the measured set's.
    assert [p.name for p in settings.MEDIA_ROOT.rglob("*.safetensors")] == [Path(vector_set.file.name).name]
    assert vector_set.functional_range["mood"] in (0.0, *RANGE_CANDIDATES)
    assert "functional range" in capsys.readouterr().out


def test_an_import_whose_measurement_failed_can_be_measured_again(tiny_site, as_alice, tmp_path, settings):
    settings.STEERLAB_RANGE_SEARCH = True
    content = gguf_bytes({1: np.random.default_rng(2).standard_normal(runtime.site_model().hidden_size)}, tmp_path)
    pk = import_(as_alice, content).json()["id"]
    VectorSet.objects.filter(pk=pk).update(status=VectorSet.Status.FAILED, error="The background task failed")
    assert as_alice.post(f"/api/vector-sets/{pk}/compute/").status_code == 202
    vector_set = vector_sets.vector_set_compute(vector_set=VectorSet.objects.get(pk=pk), loaded=runtime.site_model())
    assert vector_set.is_ready, vector_set.error  # its stored vectors measured, nothing to extract
    assert vector_set.functional_range["mood"] in (0.0, *RANGE_CANDIDATES)
