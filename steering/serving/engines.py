"""The site's inference engine other than the builtin scheduler, configured from the settings:
`vllm_scheduler` (STEERLAB_ENGINE=vllm), imported lazily since vLLM is an optional install."""

from __future__ import annotations

from django.conf import settings


def vllm_scheduler(loaded):
    """The site's `VllmScheduler`, configured like the builtin scheduler."""
    from steering.vllm_inference.engine import VllmScheduler
    from steering.vllm_inference.weights import vllm_model_dir

    path = vllm_model_dir(loaded, settings.STEERLAB_MODEL, settings.STEERLAB_VLLM_MODEL_DIR)
    return VllmScheduler(
        loaded,
        path,
        max_batch=settings.STEERLAB_MAX_BATCH,
        max_queue=settings.STEERLAB_MAX_QUEUE,
        max_per_user=settings.STEERLAB_MAX_PER_USER,
        steered_rows=settings.STEERLAB_VLLM_STEERED_ROWS,
        eager=settings.STEERLAB_VLLM_EAGER,
        tensor_parallel=settings.STEERLAB_VLLM_TENSOR_PARALLEL,
        dtype=str(loaded.dtype).removeprefix("torch."),
    )
