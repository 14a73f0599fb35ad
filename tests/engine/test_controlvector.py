"""steering.engine.controlvector: our GGUF files checked against every rule of llama.cpp's
loader with the `gguf` package's own reader, our reader refusing what that loader refuses,
the block-N hook point, and a file turned back into steering vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gguf
from steering.engine import RowSteering, SteeringHooks, SteeringVectors
from steering.engine.controlvector import (
    ControlVector, ControlVectorError, block_index, control_vector_from, read_control_vector, steering_vectors_from,
    write_control_vector,
)
from tests.tiny_models import build_tiny

LAYERS, HIDDEN = 6, 16


def make_vectors(layers=(0, 2, 3, 5), range_=0.05):
    generator = torch.Generator().manual_seed(3)
    return SteeringVectors(
        model_id="m", hidden_size=HIDDEN, num_layers=LAYERS, layers=list(layers),
        vectors={"formality": torch.randn(LAYERS, HIDDEN, generator=generator)},
        residual_norms=torch.linspace(2, 12, LAYERS), functional_range={"formality": range_},
        labels={"formality": ["Casual", "Formal"]},
    )


def write_raw(path, tensors: dict[str, np.ndarray], arch="controlvector"):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("controlvector.model_hint", "llama")
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_our_file_keeps_every_rule_of_llama_cpps_loader(tmp_path):
    vectors = make_vectors()
    path = write_control_vector(control_vector_from(vectors, "formality", 0.5, model_hint="llama", source="set 7"),
                                tmp_path / "f.gguf")
    reader = gguf.GGUFReader(str(path))
    names = [t.name for t in reader.tensors]
    # Tensors named direction.N only, N a plain positive integer, never 0.
    assert names and all(n.startswith("direction.") and n.split(".", 1)[1].isdigit() for n in names)
    indices = [int(n.split(".")[1]) for n in names]
    assert 0 not in indices and indices == [2, 3, 5]  # the steered layers but 0
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(n) for n in tensor.shape] == [HIDDEN]  # 1-D, n_embd long
    field = reader.get_field("general.architecture")
    assert field.contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    count = reader.get_field("controlvector.layer_count")
    assert count.contents() == 3 and count.types == [gguf.GGUFValueType.INT32]
    # direction.N is what SteerLab adds at block N at that strength.
    deltas = vectors.layer_deltas({"formality": 0.5})
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        assert torch.allclose(torch.from_numpy(np.array(tensor.data)), deltas[layer])
    assert reader.get_field("steerlab.strength").contents() == 0.5
    assert reader.get_field("steerlab.omitted_layers").contents() == [0]
    assert reader.get_field("steerlab.labels").contents() == ["Casual", "Formal"]


def test_block_n_is_the_output_of_model_layers_n():
    """SteerLab's hook on layer N changes what block N hands to block N+1 (Hugging Face's
    hidden_states[N+1]) by the vector, and nothing block N receives: where llama.cpp adds
    direction.N. Read by pre-hooks on the blocks themselves."""
    loaded = build_tiny("llama")
    ids = torch.tensor([loaded.tokenizer("hello there friend")["input_ids"]])
    block = 2
    delta = torch.randn(1, loaded.hidden_size, dtype=torch.float64)

    def inputs(steering):
        seen = {}
        handles = [loaded.layers[i].register_forward_pre_hook(
            lambda module, args, kwargs, i=i: seen.__setitem__(i, (args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True) for i in (block, block + 1)]
        try:
            with SteeringHooks(loaded.layers, [block]) as hooks, hooks.active(steering):
                loaded.model(ids)
        finally:
            for handle in handles:
                handle.remove()
        return seen

    plain, steered = inputs(None), inputs(RowSteering({block: delta}))
    assert torch.equal(steered[block], plain[block])
    assert torch.allclose(steered[block + 1] - plain[block + 1], delta.expand_as(plain[block + 1]))


@pytest.mark.parametrize("name", ["direction", "directions.1", "layer.1", "direction.x", "direction.-2", "direction."])
def test_it_refuses_a_name_the_loader_cannot_parse(tmp_path, name):
    path = write_raw(tmp_path / "bad.gguf", {"direction.1": np.ones(4, np.float32), name: np.ones(4, np.float32)})
    with pytest.raises(ControlVectorError, match="unparsable"):
        read_control_vector(path)


def test_it_reads_names_as_stoi_does():
    assert block_index("direction.7") == 7
    assert block_index("direction.7.bias") == 7  # stoi stops at the first non-digit
    assert block_index("direction. 3") == 3
    assert block_index("direction.99999999999") == -1  # out of int range: stoi throws


def test_it_refuses_block_zero(tmp_path):
    path = write_raw(tmp_path / "zero.gguf", {"direction.0": np.ones(4, np.float32)})
    with pytest.raises(ControlVectorError, match="zero"):
        read_control_vector(path)


def test_it_refuses_other_types_shapes_and_lengths(tmp_path):
    with pytest.raises(ControlVectorError, match="non-F32"):
        read_control_vector(write_raw(tmp_path / "a.gguf", {"direction.1": np.ones(4, np.float16)}))
    with pytest.raises(ControlVectorError, match="non-1D"):
        read_control_vector(write_raw(tmp_path / "b.gguf", {"direction.1": np.ones((2, 4), np.float32)}))
    with pytest.raises(ControlVectorError, match="previous"):
        read_control_vector(write_raw(tmp_path / "c.gguf", {"direction.1": np.ones(4, np.float32),
                                                             "direction.2": np.ones(5, np.float32)}))
    with pytest.raises(ControlVectorError, match="No direction"):
        read_control_vector(write_raw(tmp_path / "d.gguf", {}))
    (tmp_path / "e.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(ControlVectorError, match="readable GGUF"):
        read_control_vector(tmp_path / "e.gguf")


def test_a_repeated_block_adds_up(tmp_path):
    path = write_raw(tmp_path / "r.gguf", {"direction.1": np.ones(4, np.float32),
                                           "direction.1.again": np.full(4, 2, np.float32)})
    assert read_control_vector(path).directions[1].tolist() == [3.0] * 4


def test_writing_refuses_block_zero_and_ragged_directions(tmp_path):
    with pytest.raises(ControlVectorError, match="≥ 1"):
        write_control_vector(ControlVector({0: torch.ones(4)}), tmp_path / "x.gguf")
    with pytest.raises(ControlVectorError, match="one length"):
        write_control_vector(ControlVector({1: torch.ones(4), 2: torch.ones(5)}), tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("strength", [1.0, -0.4])
def test_our_file_comes_back_as_the_same_steering(tmp_path, strength):
    vectors = make_vectors(layers=(2, 3, 5))
    path = write_control_vector(control_vector_from(vectors, "formality", strength), tmp_path / "f.gguf")
    back = steering_vectors_from(read_control_vector(path), dimension="formality", labels=["Casual", "Formal"],
                                 model_id="m", num_layers=LAYERS, hidden_size=HIDDEN,
                                 residual_norms=torch.full((LAYERS,), 99.0))
    assert back.layers == [2, 3, 5] and back.functional_range == vectors.functional_range
    for s in (1.0, 0.3, -1.0):
        want, got = vectors.layer_deltas({"formality": s}), back.layer_deltas({"formality": s})
        assert all(torch.allclose(want[layer], got[layer], rtol=1e-5, atol=1e-6) for layer in want)


def test_a_foreign_file_at_strength_one_is_the_file_at_scale_one(tmp_path):
    directions = {1: torch.randn(HIDDEN), 4: torch.randn(HIDDEN) * 3}
    path = write_raw(tmp_path / "x.gguf", {f"direction.{k}": v.numpy() for k, v in directions.items()})
    norms = torch.linspace(2, 12, LAYERS)
    back = steering_vectors_from(read_control_vector(path), dimension="mood", labels=["sad", "happy"], model_id="m",
                                 num_layers=LAYERS, hidden_size=HIDDEN, residual_norms=norms)
    deltas = back.layer_deltas({"mood": 1.0})
    assert sorted(deltas) == [1, 4]
    assert all(torch.allclose(deltas[k], directions[k], atol=1e-5) for k in directions)
    # The range is in SteerLab's unit, a fraction of the model's residual stream.
    ratios = sorted(float(directions[k].norm() / norms[k]) for k in directions)
    assert ratios[0] <= back.functional_range["mood"] <= ratios[-1]


def test_a_file_that_does_not_fit_the_model_is_refused(tmp_path):
    path = write_raw(tmp_path / "x.gguf", {"direction.1": np.ones(8, np.float32), "direction.9": np.ones(8, np.float32)})
    with pytest.raises(ControlVectorError) as caught:
        steering_vectors_from(read_control_vector(path), dimension="d", labels=["a", "b"], model_id="m",
                              num_layers=LAYERS, hidden_size=HIDDEN, residual_norms=torch.ones(LAYERS))
    assert "hidden size is 16" in str(caught.value) and "blocks [9]" in str(caught.value)


def test_a_conditional_dimension_exports_its_vector_only_and_says_so(tmp_path):
    from steering.engine.conditions import Condition

    plain = make_vectors()
    condition = Condition(layer=2, direction=torch.ones(HIDDEN) / HIDDEN**0.5, center=torch.zeros(HIDDEN), threshold=0.1)
    gated = plain.with_conditions({"formality": condition})
    path = write_control_vector(control_vector_from(gated, "formality", 1.0), tmp_path / "f.gguf")
    back = read_control_vector(path)
    assert "conditional steering" in back.metadata["steerlab.notice"]
    # The same tensors as the set without conditions: llama.cpp gets the vector, nothing else.
    unconditional = read_control_vector(write_control_vector(control_vector_from(plain, "formality", 1.0), tmp_path / "p.gguf"))
    assert back.directions.keys() == unconditional.directions.keys()
    assert all(torch.equal(back.directions[n], unconditional.directions[n]) for n in back.directions)
    assert "steerlab.notice" not in unconditional.metadata
    reader = gguf.GGUFReader(str(path))
    assert all(t.name.startswith("direction.") for t in reader.tensors)


def test_a_set_that_steers_only_the_answer_says_that_llama_cpp_steers_the_prompt_too(tmp_path):
    answer_only = make_vectors().with_steer_prompt(False)
    back = read_control_vector(write_control_vector(control_vector_from(answer_only, "formality", 1.0), tmp_path / "a.gguf"))
    assert "steers only the answer" in back.metadata["steerlab.notice"]
    assert "start below 1" in back.metadata["steerlab.notice"]


@pytest.mark.parametrize("strength, side", [(1.0, 0.05), (-0.5, 0.02)])
def test_a_set_with_two_ranges_exports_the_side_of_the_strength_and_says_so(tmp_path, strength, side):
    sided = make_vectors(layers=(2, 3)).with_ranges({"formality": 0.05}, negative={"formality": 0.02})
    back = read_control_vector(write_control_vector(control_vector_from(sided, "formality", strength), tmp_path / "s.gguf"))
    assert back.metadata["steerlab.functional_range"] == pytest.approx(side)
    assert "llama.cpp scales one vector both ways" in back.metadata["steerlab.notice"]
    # The file is that side's steering at that strength, and reads back as it.
    assert all(torch.allclose(back.directions[layer], delta, rtol=1e-5, atol=1e-6)
               for layer, delta in sided.layer_deltas({"formality": strength}).items())
    read = steering_vectors_from(back, dimension="formality", labels=["Casual", "Formal"], model_id="m",
                                 num_layers=LAYERS, hidden_size=HIDDEN, residual_norms=torch.ones(LAYERS))
    assert read.functional_range == {"formality": pytest.approx(side)} and read.negative_range == {}
