import pytest

from steering.engine import SteerableModel, UnknownDimension, VectorFileError

from tests.tiny_models import CORPUS, build_tiny


@pytest.fixture
def model():
    return SteerableModel(build_tiny("qwen2"))


def test_the_notebook_workflow_computes_saves_loads_and_steers(model, tmp_path):
    vectors = model.compute_vectors({"formality": (CORPUS[0::2], CORPUS[1::2])}, functional_range=3.0)
    path = vectors.save(tmp_path / "formality.safetensors")
    model.load_vectors(path)
    plain = model.generate("hello world", max_new_tokens=8)
    formal = model.generate("hello world", preferences={"formality": 1.0}, max_new_tokens=8)
    casual = model.generate("hello world", preferences={"formality": -1.0}, max_new_tokens=8)
    assert len({plain, formal, casual}) == 3
    assert model.generate("hello world", preferences={"formality": 0.0}, max_new_tokens=8) == plain
    assert "".join(model.stream("hello world", {"formality": 1.0}, max_new_tokens=8)) == formal
    batch = model.generate_batch([
        {"prompt": "hello world", "preferences": {"formality": 1.0}, "max_new_tokens": 8},
        {"prompt": "hello world", "max_new_tokens": 8},
        {"prompt": "hello world", "preferences": {"formality": -1.0}, "max_new_tokens": 8},
    ])
    assert batch == [formal, plain, casual]


def test_it_combines_vector_sets_and_asks_which_when_ambiguous(model):
    a = model.compute_vectors({"formality": (CORPUS[0::2], CORPUS[1::2])})
    b = model.compute_vectors({"mood": (CORPUS[1::2], CORPUS[0::2]), "formality": (CORPUS[1::2], CORPUS[0::2])})
    model.add_vectors(a, "a")
    model.add_vectors(b, "b")
    with pytest.raises(ValueError, match="vector_set="):
        model.layer_deltas({"formality": 1.0})
    assert model.layer_deltas({"formality": 1.0}, vector_set="a")
    assert model.layer_deltas({"mood": 1.0})
    with pytest.raises(UnknownDimension, match="known: formality, mood"):
        model.layer_deltas({"cost": 1.0})
    with pytest.raises(KeyError, match="No vector set named 'c'"):
        model.layer_deltas({"mood": 1.0}, vector_set="c")


def test_it_refuses_vectors_of_another_model(model, tmp_path):
    other = SteerableModel(build_tiny("gpt2"))
    path = other.compute_vectors({"formality": (CORPUS[0::2], CORPUS[1::2])}).save(tmp_path / "gpt2.safetensors")
    with pytest.raises(VectorFileError, match="tiny-gpt2"):
        model.load_vectors(path)
    assert model.vector_sets == {}
