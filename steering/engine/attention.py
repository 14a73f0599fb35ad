"""Grouped-query attention without copies, for padded batches.

transformers' SDPA path expands the key/value heads of a grouped-query model (repeat_kv,
a full copy per layer and step) whenever an attention mask is present, which is every
left-padded batch; PyTorch's SDPA can share the heads itself (`enable_gqa`). On the CPU this
copy was a quarter of a batched decode step for SmolLM2 (3 key/value heads for 9 queries).
`use_gqa_attention(model)` switches an SDPA model to this variant; results are the same.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "steerlab_sdpa"


def gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or attention_mask is None or kwargs.get("output_attentions") or kwargs.get("head_mask") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    if attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, gqa_sdpa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_gqa_attention(model) -> bool:
    """Switch `model` from SDPA to the copy-free variant; False (and no change) otherwise."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return True
