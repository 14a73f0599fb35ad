import json

import math

import pytest
import torch
from safetensors.torch import save_file

from steering.engine import SteeringVectors, UnknownDimension, VectorFileError, compute_vectors

from tests.tiny_models import CORPUS, build_tiny


@pytest.fixture
def vectors():
    loaded = build_tiny("llama")
    return compute_vectors(
        loaded, {"formality": (CORPUS[0::2], CORPUS[1::2]), "mood": (CORPUS[1::2], CORPUS[0::2])},
        labels={"formality": ["Casual", "Formal"]},
    )


def test_it_round_trips_vectors_and_metadata(vectors, tmp_path):
    path = vectors.save(tmp_path / "set.safetensors")
    loaded = SteeringVectors.load(path)
    for dim in ("formality", "mood"):
        assert torch.equal(loaded.vectors[dim], vectors.vectors[dim])
        assert torch.allclose(loaded.norms(dim), vectors.norms(dim))
    assert torch.equal(loaded.residual_norms, vectors.residual_norms)
    for name in ("model_id", "hidden_size", "num_layers", "layers", "method", "read", "functional_range", "labels", "created_at",
                 "layer_scores", "joint_range"):
        assert getattr(loaded, name) == getattr(vectors, name)
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is gone
    budgeted = SteeringVectors.load(vectors.with_joint_range(0.03).save(tmp_path / "joint.safetensors"))
    assert budgeted.joint_range == 0.03
    # A computed set steers only the answer; a file from before the policy was recorded steered
    # the prompt too (its ranges were measured so), and still does.
    assert loaded.steer_prompt is False
    assert SteeringVectors.load(vectors.with_steer_prompt(True).save(tmp_path / "both.safetensors")).steer_prompt is True
    older = tmp_path / "older"
    older.mkdir()
    assert SteeringVectors.load(_write(older / "v.safetensors", ONES)).steer_prompt is True


def test_the_file_carries_readable_metadata(vectors, tmp_path):
    from safetensors import safe_open

    path = vectors.save(tmp_path / "set.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
    assert meta["dimensions"] == ["formality", "mood"]
    assert meta["model_id"] == "tiny-llama"
    assert len(meta["norms"]["formality"]) == 4
    assert meta["created_at"].endswith("+00:00")


def test_it_says_everything_that_does_not_fit_the_model(vectors):
    with pytest.raises(VectorFileError) as err:
        vectors.check_model(model_id="other/model", num_layers=30, hidden_size=576)
    message = str(err.value)
    assert "'tiny-llama', not 'other/model'" in message
    assert "4 layers, the model has 30" in message
    assert "hidden size 64, the model has 576" in message
    vectors.check_model(model_id="tiny-llama", num_layers=4, hidden_size=64)


def test_it_rejects_files_that_are_not_vector_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(VectorFileError, match="not a readable safetensors"):
        SteeringVectors.load(garbage)
    with pytest.raises(VectorFileError, match="No vector file"):
        SteeringVectors.load(tmp_path / "absent.safetensors")


def _write(path, tensors, **meta):
    base = {"model_id": "m", "hidden_size": 8, "num_layers": 2, "layers": [0, 1], "dimensions": ["d"],
            "functional_range": {"d": 0.1}}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in {**base, **meta}.items()})
    return path


@pytest.mark.parametrize(
    "tensors, meta, message",
    [
        ({"vector.d": torch.full((2, 8), float("nan")), "residual_norms": torch.ones(2)}, {}, "non-finite"),
        ({"vector.d": torch.ones(3, 8), "residual_norms": torch.ones(2)}, {}, "shape"),
        ({"vector.d": torch.ones(2, 8, dtype=torch.int32).float().int(), "residual_norms": torch.ones(2)}, {}, "dtype"),
        ({"residual_norms": torch.ones(2)}, {}, "missing tensors"),
        ({"vector.d": torch.ones(2, 8), "residual_norms": torch.ones(2)}, {"layers": [5]}, "steered layers"),
        ({"vector.d": torch.ones(2, 8), "residual_norms": torch.ones(2)}, {"method": "magic"}, "method"),
    ],
)
def test_it_validates_what_it_loads(tmp_path, tensors, meta, message):
    with pytest.raises(VectorFileError, match=message):
        SteeringVectors.load(_write(tmp_path / "v.safetensors", tensors, **meta))


ONES = {"vector.d": torch.ones(2, 8), "residual_norms": torch.ones(2)}


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"dimensions": 5}, "dimensions must be a list"),
        ({"dimensions": "d"}, "dimensions must be a list"),
        ({"dimensions": [["d"]]}, "dimensions must be a list"),
        ({"dimensions": []}, "no dimensions"),
        ({"labels": []}, "labels must be an object"),
        ({"labels": {"d": []}}, "labels of 'd'"),
        ({"labels": {"d": ["low", 5]}}, "labels of 'd'"),
        ({"labels": {"d": ["low", "x" * 61]}}, "labels of 'd'"),
        ({"labels": {"zzz": ["a", "b"]}}, "labels name unknown"),
        ({"functional_range": [0.1]}, "functional_range must be an object"),
        ({"functional_range": {"d": "big"}}, "functional range"),
        ({"functional_range": {"d": 0.1, "junk": 1}}, "functional range names unknown dimension 'junk'"),
        ({"negative_range": [0.1]}, "negative_range must be an object"),
        ({"negative_range": {"d": "big"}}, "each negative range must be a number"),
        ({"layers": 3}, "layers must be a list"),
        ({"layers": [True]}, "layers must be a list"),
        ({"hidden_size": "8"}, "hidden_size"),
        ({"num_layers": 2.5}, "num_layers"),
        ({"model_id": ["m"]}, "model_id"),
        ({"method": 5}, "method"),
        ({"layer_scores": []}, "layer_scores must be an object"),
        ({"layer_scores": {"d": [1, "x"]}}, "layer_scores"),
        ({"created_at": {}}, "created_at"),
        ({"joint_range": "wide"}, "joint_range must be a number"),
        ({"joint_range": -0.1}, "joint range must be a finite number > 0"),
        ({"steer_prompt": "no"}, "steer_prompt must be true or false"),
    ],
)
def test_it_rejects_malformed_metadata_with_a_message(tmp_path, meta, message):
    with pytest.raises(VectorFileError, match=message):
        SteeringVectors.load(_write(tmp_path / "v.safetensors", ONES, **meta))


@pytest.mark.parametrize(
    "name", ["Not A Slug", "x" * 51, "../etc", "", "ümlaut"],
)
def test_dimension_names_are_short_slugs(tmp_path, name):
    tensors = {f"vector.{name}": torch.ones(2, 8), "residual_norms": torch.ones(2)}
    with pytest.raises(VectorFileError, match="dimension name"):
        SteeringVectors.load(_write(tmp_path / "v.safetensors", tensors, dimensions=[name], functional_range={name: 0.1}))


def test_it_rejects_files_without_metadata(tmp_path):
    path = tmp_path / "v.safetensors"
    save_file({"vector.d": torch.ones(2, 8)}, str(path))
    with pytest.raises(VectorFileError, match="metadata lacks"):
        SteeringVectors.load(path)


def test_strengths_scale_unit_directions_by_the_residual_norm(vectors):
    deltas = vectors.layer_deltas({"formality": 0.5})
    assert sorted(deltas) == vectors.layers
    for layer, delta in deltas.items():
        expected = 0.5 * vectors.functional_range["formality"] * vectors.residual_norms[layer]
        assert delta.norm().item() == pytest.approx(expected.item(), rel=1e-5)
    both = vectors.layer_deltas({"formality": 0.5, "mood": -1.0})
    mood = vectors.layer_deltas({"mood": -1.0})
    for layer in vectors.layers:  # dimensions combine additively
        assert torch.allclose(both[layer], deltas[layer] + mood[layer])
    assert vectors.layer_deltas({"formality": 0.0}) == {}


def test_a_negative_range_steers_the_negative_side_only_and_survives_the_file(vectors, tmp_path):
    sided = vectors.with_ranges({"formality": 0.02, "mood": 0.01}, negative={"formality": 0.005, "mood": 0.01})
    assert sided.negative_range == {"formality": 0.005}  # mood's sides agree: no override kept
    assert sided.range_text("formality") == "−0.005 / +0.02" and sided.range_text("mood") == "±0.01"
    for layer in vectors.layers:
        norm = vectors.residual_norms[layer].item()
        assert sided.layer_deltas({"formality": 1.0})[layer].norm().item() == pytest.approx(0.02 * norm, rel=1e-5)
        assert sided.layer_deltas({"formality": -0.5})[layer].norm().item() == pytest.approx(0.0025 * norm, rel=1e-5)
        assert sided.layer_deltas({"mood": -1.0})[layer].norm().item() == pytest.approx(0.01 * norm, rel=1e-5)
    loaded = SteeringVectors.load(sided.save(tmp_path / "sided.safetensors"))
    assert loaded.negative_range == {"formality": 0.005} and loaded.functional_range == sided.functional_range
    # New ranges for a dimension replace both of its sides; other dimensions keep theirs.
    assert vectors.with_ranges({"formality": 0.02}, negative={"formality": 0.005}).with_ranges({"formality": 0.03}).negative_range == {}
    assert sided.with_ranges({"mood": 0.03}).negative_range == {"formality": 0.005}
    with pytest.raises(VectorFileError, match="negative range of 'formality' must be a finite number"):
        vectors.with_ranges({}, negative={"formality": -0.01})
    with pytest.raises(VectorFileError, match="negative range names unknown dimension 'junk'"):
        vectors.with_ranges({}, negative={"junk": 0.01})


def test_it_rejects_unknown_dimensions_and_non_finite_strengths(vectors):
    with pytest.raises(UnknownDimension, match="'cost'.*formality, mood"):
        vectors.layer_deltas({"cost": 0.5})
    with pytest.raises(ValueError, match="finite"):
        vectors.layer_deltas({"formality": float("inf")})


def test_a_joint_range_caps_the_summed_addition_and_leaves_one_dimension_within_it_alone(vectors):
    ranged = vectors.with_ranges({"formality": 0.02, "mood": 0.02})
    capped = ranged.with_joint_range(0.025)
    alone, alone_capped = ranged.layer_deltas({"formality": 1.0}), capped.layer_deltas({"formality": 1.0})
    both, both_capped = ranged.layer_deltas({"formality": 1.0, "mood": -1.0}), capped.layer_deltas({"formality": 1.0, "mood": -1.0})
    for layer in vectors.layers:
        norm = vectors.residual_norms[layer].item()
        assert torch.equal(alone_capped[layer], alone[layer])  # 0.02 is within the budget of 0.025
        assert both[layer].norm().item() > 0.025 * norm * 1.01  # two near-independent 0.02s add to more
        assert both_capped[layer].norm().item() == pytest.approx(0.025 * norm, rel=1e-4)
        # Scaled, not turned: the same direction as the plain sum.
        assert torch.nn.functional.cosine_similarity(both_capped[layer], both[layer], dim=0).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(VectorFileError, match="joint range"):
        vectors.with_joint_range(0.0)


def test_one_dimension_alone_keeps_its_range_over_the_budget_and_a_second_lowers_the_cap_gradually(vectors):
    """The budget caps dimensions steering together; one alone keeps the range measured for it
    alone, and a second joining it at a small strength moves the cap by as much, not at once."""
    budgeted = vectors.with_ranges({"formality": 0.03, "mood": 0.02}).with_joint_range(0.025)
    unbudgeted = budgeted.with_joint_range(None)
    alone = budgeted.layer_deltas({"formality": 1.0})
    assert all(torch.equal(alone[layer], unbudgeted.layer_deltas({"formality": 1.0})[layer]) for layer in vectors.layers)
    assert budgeted.joint_cap([0.03]) == pytest.approx(0.03)
    assert budgeted.joint_cap([0.03, 0.002]) == pytest.approx(0.028)  # leads by 0.028
    assert budgeted.joint_cap([0.03, 0.02]) == pytest.approx(0.025)  # leads by 0.01 < the budget
    assert unbudgeted.joint_cap([0.03, 0.02]) == math.inf
    nudged = budgeted.layer_deltas({"formality": 1.0, "mood": 0.1})  # mood adds 0.002
    together = budgeted.layer_deltas({"formality": 1.0, "mood": -1.0})
    for layer in vectors.layers:
        norm = vectors.residual_norms[layer].item()
        assert nudged[layer].norm().item() == pytest.approx(0.028 * norm, rel=1e-4)
        assert together[layer].norm().item() == pytest.approx(0.025 * norm, rel=1e-4)
