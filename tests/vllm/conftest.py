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
def vllm_site():
    """The site configured for vLLM for the whole session (this pass runs tests/vllm alone):
    `runtime.site_scheduler()` then builds the `VllmScheduler` through the same switch as
    `STEERLAB_ENGINE=vllm make run`, and the websocket tests' local and worker modes use it."""
    if VLLM_MISSING:
        pytest.skip(SKIP_REASON)
    from django.conf import settings

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    settings.STEERLAB_ENGINE = "vllm"
    settings.STEERLAB_MODEL, settings.STEERLAB_DEVICE, settings.STEERLAB_DTYPE = "embedded", "cpu", "float32"
    settings.STEERLAB_VLLM_STEERED_ROWS = ROWS
    settings.STEERLAB_MAX_BATCH, settings.STEERLAB_MAX_QUEUE = 16, 64
    return settings


@pytest.fixture(scope="session")
def loaded(vllm_site):
    from steering.serving import runtime

    return runtime.site_model()


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
def vllm_scheduler(vllm_site, loaded):
    from steering.serving import runtime
    from steering.vllm_inference.engine import VllmScheduler

    scheduler = runtime.site_scheduler()
    assert isinstance(scheduler, VllmScheduler)
    scheduler.max_per_user = None  # the tests submit many requests without a user
    return scheduler  # closed at exit by the serving site, as in the server
