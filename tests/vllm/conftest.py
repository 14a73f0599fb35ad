"""The vLLM engine's tests run in .venv-vllm (`make test-vllm`); without vLLM they skip.

One `VllmScheduler` on the embedded SmolLM2 serves the whole module set (vLLM's start-up is
seconds in eager mode, but the model load and conversion add up), next to the builtin engine's
own `LoadedModel` of the same weights, which the tests compare against.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

VLLM_MISSING = importlib.util.find_spec("vllm") is None
SKIP_REASON = "vLLM is not installed in this virtualenv: run `make test-vllm` (it builds .venv-vllm)"

STEERED_LAYERS = range(7, 22)
ROWS = 12


@pytest.fixture(scope="session")
def loaded():
    from steering.engine import load_model

    return load_model("embedded", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def residual_norms(loaded):
    from steering.engine import record_activations

    _, norms = record_activations(loaded, ["Tell me about the sea.", "How do I bake bread?"])
    return norms


@pytest.fixture(scope="session")
def steering_for(loaded, residual_norms):
    """`steering_for(seed, scale)`: a random steering (layers 7–21) whose per-layer norm is
    `scale` × that layer's mean residual norm: distinct seeds give distinct users' steering."""

    def make(seed: int, scale: float = 0.6) -> dict[int, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        direction = torch.randn(loaded.hidden_size, generator=generator)
        direction /= direction.norm()
        return {layer: direction * scale * float(residual_norms[layer]) for layer in STEERED_LAYERS}

    return make


@pytest.fixture(scope="session")
def vllm_scheduler(loaded, tmp_path_factory):
    if VLLM_MISSING:
        pytest.skip(SKIP_REASON)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from steering.vllm_engine import vllm_model_dir
    from steering.vllm_engine.engine import VllmScheduler

    cache = os.environ.get("STEERLAB_VLLM_MODEL_DIR") or str(tmp_path_factory.mktemp("vllm-models"))
    path = vllm_model_dir(loaded, "embedded", cache)
    scheduler = VllmScheduler(loaded, path, max_batch=16, max_queue=64, max_per_user=None, steered_rows=ROWS,
                              eager=True, dtype="float32", max_model_len=1024)
    yield scheduler
    scheduler.close()
