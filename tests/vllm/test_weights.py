"""The site model's weights converted for vLLM (these run in the main virtualenv too)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from steering.engine.loading import EMBEDDED
from steering.vllm_inference.weights import vllm_model_dir
from tests.tiny_models import build_tiny_llama_for_vllm


def test_converted_weights_are_kept_per_dtype_so_neither_engine_computes_with_rounded_ones(tmp_path):
    full = build_tiny_llama_for_vllm(dtype=torch.float32)
    rounded = build_tiny_llama_for_vllm(dtype=torch.bfloat16)
    bf16_dir = vllm_model_dir(rounded, EMBEDDED, tmp_path)
    f32_dir = vllm_model_dir(full, EMBEDDED, tmp_path)  # after a bf16 conversion, as a bench leaves it
    assert f32_dir != bf16_dir
    saved = load_file(str(f32_dir / "model.safetensors"))
    for name, tensor in full.model.state_dict().items():
        if name in saved:
            assert saved[name].dtype == torch.float32 and torch.equal(saved[name], tensor)
    assert vllm_model_dir(full, EMBEDDED, tmp_path) == f32_dir  # converted once, then reused
    assert load_file(str(bf16_dir / "model.safetensors"))["model.embed_tokens.weight"].dtype == torch.bfloat16
