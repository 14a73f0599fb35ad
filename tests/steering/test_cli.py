import json

import pytest
import torch
from django.core.management import CommandError, call_command

from steering.engine import SteeringVectors
from steering.models import PreferenceDimension, VectorSet

from tests.tiny_models import CORPUS, build_tiny

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def model_dir(tmp_path):
    tiny = build_tiny("llama", dtype=torch.float32)
    path = tmp_path / "tiny-model"
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.fixture
def example_files(tmp_path):
    return _write(tmp_path / "pos.json", CORPUS[0::2]), _write(tmp_path / "neg.json", {"examples": CORPUS[1::2]})


def test_create_template_writes_two_files_to_fill_in(tmp_path, capsys):
    call_command("create_template", "politeness", output_dir=str(tmp_path))
    positive = json.loads((tmp_path / "politeness_positive.json").read_text())
    negative = json.loads((tmp_path / "politeness_negative.json").read_text())
    assert "POSITIVE end of 'politeness'" in positive[0] and "NEGATIVE end" in negative[0]
    assert "compute_vectors --preference politeness" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already exist"):
        call_command("create_template", "politeness", output_dir=str(tmp_path))
    call_command("create_template", "politeness", output_dir=str(tmp_path), force=True)


def test_create_template_starts_a_shipped_dimension_from_its_examples(tmp_path):
    call_command("create_template", "formality", output_dir=str(tmp_path))
    assert len(json.loads((tmp_path / "formality_positive.json").read_text())) >= 50


def test_compute_vectors_computes_and_registers_a_vector_set(model_dir, example_files, tmp_path, media, capsys):
    positive, negative = example_files
    output = tmp_path / "out" / "formality.safetensors"
    call_command(
        "compute_vectors", model=str(model_dir), preference="formality", positive_data=positive,
        negative_data=negative, positive_label="Formal", negative_label="Casual", output=str(output),
    )
    vector_set = VectorSet.objects.get()
    said = ", ".join(vector_set.worded_dimensions) or "none"
    assert f"said in words where they apply: {said}" in capsys.readouterr().out
    assert vector_set.status == VectorSet.Status.READY and vector_set.model_id == str(model_dir)
    assert vector_set.name == "formality (caa)"
    dimension = PreferenceDimension.objects.get(name="formality")
    assert (dimension.negative_label, dimension.positive_label) == ("Casual", "Formal")
    assert dimension.negative_examples == CORPUS[1::2]
    assert SteeringVectors.load(output).dimensions == ["formality"]
    assert (media / vector_set.file.name).is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ({"texts": ["a", "b"]}, "JSON list of non-empty texts"),
        (["fine text", ""], "JSON list of non-empty texts"),
        (["only one"], "at least 2"),
    ],
)
def test_compute_vectors_explains_bad_data_files_and_creates_nothing(model_dir, example_files, tmp_path, content, message):
    positive, _ = example_files
    bad = tmp_path / "bad.json"
    if content is not None:
        _write(bad, content)
    with pytest.raises(CommandError, match=message):
        call_command("compute_vectors", model=str(model_dir), preference="f", positive_data=positive, negative_data=str(bad))
    assert not VectorSet.objects.exists() and not PreferenceDimension.objects.exists()


def test_compute_vectors_explains_a_missing_model(example_files):
    positive, negative = example_files
    with pytest.raises(CommandError, match="not found"):
        call_command("compute_vectors", model="/no/such/model", preference="f", positive_data=positive, negative_data=negative)
    assert not VectorSet.objects.exists()


def test_load_vectors_registers_a_file_and_its_dimensions(tmp_path, media):
    tiny = build_tiny("gpt2")
    from steering.engine import compute_vectors

    path = compute_vectors(tiny, {"mood": (CORPUS[0::2], CORPUS[1::2])}, labels={"mood": ["Gloomy", "Cheerful"]}).save(
        tmp_path / "mood.safetensors"
    )
    call_command("load_vectors", str(path))
    vector_set = VectorSet.objects.get()
    assert vector_set.name == "mood" and vector_set.status == VectorSet.Status.READY
    assert vector_set.model_id == "tiny-gpt2" and vector_set.num_layers == 4 and vector_set.hidden_size == 64
    assert PreferenceDimension.objects.get(name="mood").positive_label == "Cheerful"
    stored = SteeringVectors.load(media / vector_set.file.name)
    assert torch.equal(stored.vectors["mood"], SteeringVectors.load(path).vectors["mood"])


def test_load_vectors_refuses_a_broken_file_and_leaves_nothing(tmp_path, media):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")
    with pytest.raises(CommandError, match="not a readable safetensors"):
        call_command("load_vectors", str(broken))
    with pytest.raises(CommandError, match="No vector file"):
        call_command("load_vectors", str(tmp_path / "absent.safetensors"))
    assert not VectorSet.objects.exists()
    assert not media.exists() or not any(media.rglob("*"))


def test_compute_vectors_takes_shipped_dimensions_a_method_and_top_k(model_dir, media):
    call_command("compute_vectors", model=str(model_dir), preference="formality,cost", method="probe", top_k=2)
    vector_set = VectorSet.objects.get()
    assert vector_set.status == VectorSet.Status.READY
    assert (vector_set.method, vector_set.top_k, len(vector_set.layers)) == ("probe", 2, 2)
    assert sorted(vector_set.dimension_names()) == ["cost", "formality"]
    # The range was measured per dimension, and the file carries the same values.
    vectors = SteeringVectors.load(media / vector_set.file.name)
    assert vectors.functional_range == vector_set.functional_range
    assert set(vector_set.functional_range) == {"cost", "formality"}
    assert len(PreferenceDimension.objects.get(name="cost").reference_positive) >= 30


@pytest.mark.parametrize(
    "options, message",
    [
        ({"preference": "nonsense"}, "No shipped dimension nonsense"),
        ({"preference": "formality", "top_k": 0}, "at least 1"),
        ({"preference": "formality", "top_k": 4}, "below the model's 4 layers"),
    ],
)
def test_compute_vectors_refuses_what_it_cannot_compute(model_dir, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("compute_vectors", model=str(model_dir), **options)
    assert not VectorSet.objects.exists()


def test_compute_vectors_needs_both_data_files_or_neither(model_dir, example_files):
    with pytest.raises(CommandError, match="both"):
        call_command("compute_vectors", model=str(model_dir), preference="f", positive_data=example_files[0])
