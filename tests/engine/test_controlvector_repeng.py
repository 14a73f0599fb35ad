"""Our GGUF control vectors against repeng 0.4.0 from PyPI (the reference Python consumer and
producer): repeng reads our export, we read repeng's, and the numbers agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steering.engine import SteeringVectors
from steering.engine.controlvector import control_vector_from, read_control_vector, steering_vectors_from, write_control_vector

# repeng 0.4.0 annotates a method with np.float_, which NumPy 2 removed; the name is all it
# needs (the alias NumPy 1 had), so it gets it back before repeng is imported.
if not hasattr(np, "float_"):
    np.float_ = np.float64
repeng = pytest.importorskip("repeng", reason="repeng==0.4.0 is installed by the Makefile (--no-deps)")

LAYERS, HIDDEN = 8, 32


def test_repeng_reads_our_export(tmp_path):
    generator = torch.Generator().manual_seed(1)
    vectors = SteeringVectors(
        model_id="m", hidden_size=HIDDEN, num_layers=LAYERS, layers=[2, 3, 4, 5],
        vectors={"formality": torch.randn(LAYERS, HIDDEN, generator=generator)},
        residual_norms=torch.linspace(3, 20, LAYERS), functional_range={"formality": 0.04},
    )
    path = write_control_vector(control_vector_from(vectors, "formality", 0.75, model_hint="llama"), tmp_path / "ours.gguf")
    theirs = repeng.ControlVector.import_gguf(str(path))
    assert theirs.model_type == "llama"
    deltas = vectors.layer_deltas({"formality": 0.75})
    assert sorted(theirs.directions) == sorted(deltas)
    for layer, direction in theirs.directions.items():
        np.testing.assert_allclose(np.asarray(direction), deltas[layer].numpy(), rtol=1e-6, atol=1e-7)


def test_we_read_repengs_export(tmp_path):
    rng = np.random.default_rng(2)
    # What repeng trains: unit-norm PCA directions for blocks 1…n-1.
    directions = {layer: (v / np.linalg.norm(v)).astype(np.float32)
                  for layer, v in ((k, rng.standard_normal(HIDDEN)) for k in range(1, LAYERS))}
    path = tmp_path / "repeng.gguf"
    repeng.ControlVector(model_type="llama", directions=directions).export_gguf(str(path))
    ours = read_control_vector(path)
    assert ours.model_hint == "llama" and ours.layers == list(range(1, LAYERS))
    for layer, direction in directions.items():
        np.testing.assert_array_equal(ours.directions[layer].numpy(), direction)
    # As a set: strength 1 adds repeng's vectors at scale 1, block by block.
    back = steering_vectors_from(ours, dimension="mood", labels=["sad", "happy"], model_id="m", num_layers=LAYERS,
                                 hidden_size=HIDDEN, residual_norms=torch.linspace(3, 20, LAYERS))
    for layer, delta in back.layer_deltas({"mood": 1.0}).items():
        np.testing.assert_allclose(delta.numpy(), directions[layer], rtol=1e-5, atol=1e-6)
