"""The decode loop's padding mask, kept from step to step and extended by one column in place.

transformers turns the 2D padding mask into a 4D one at every forward pass
(`create_causal_mask`: a vmap over rows, queries and keys), which was 12 % of the server's
profile with 8 users (docs/benchmarks.md, 2026-12-02), and `DecodeBatch` itself copied the
whole 2D mask with `torch.cat` to add each step's column. For a decode step (one query per row,
the newest position) causality excludes nothing, so the 4D mask transformers builds is the
padding mask itself, viewed as [rows, 1, 1, columns]; and transformers passes a 4D mask through
untouched. `StepMask` keeps the padding mask in a buffer with spare columns (as `GrowingLayer`
keeps the KV cache), writes each step's column in place, and hands the model that view.

The view is given only where it is exactly the mask transformers would build
(`decode_mask_applies`): SDPA attention (a boolean mask, True = attend; eager attention wants an
additive float mask), every layer full attention (a sliding-window layer needs a mask of its
own, and one 4D mask would stand for both), and some row padded: with no padding at all
transformers passes SDPA no mask, and SDPA without a mask may take another kernel, so float32
results could differ in the last bit. In every other case the model gets the 2D mask, as before.
"""

from __future__ import annotations

import torch

from .kvcache import GROWTH
from .loading import GQA_ATTENTION

_SDPA = ("sdpa", GQA_ATTENTION)


def decode_mask_applies(model) -> bool:
    """Whether `model` builds, for a decode step, the plain 4D padding mask `StepMask` gives."""
    config = model.config
    if getattr(config, "_attn_implementation", None) not in _SDPA:
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None


class StepMask:
    """A [rows, columns] boolean padding mask (True = attend). `value` reads the filled part (a
    view); assigning it adopts the tensor as the new buffer, so slicing, merging and trimming
    work on it as on a plain tensor. `extend` adds a column every row attends to."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.value = mask

    @property
    def value(self) -> torch.Tensor:
        return self._buffer[:, : self._filled]

    @value.setter
    def value(self, mask: torch.Tensor) -> None:
        self._buffer = mask.bool()
        self._filled = mask.shape[1]
        self._padded = not bool(self._buffer.all())

    def extend(self) -> None:
        filled = self._filled
        if filled == self._buffer.shape[1]:
            # Room for GROWTH more steps or half the length: the copy is amortised over them.
            room = self._buffer.new_zeros(self._buffer.shape[0], filled + max(GROWTH, filled // 2))
            room[:, :filled] = self._buffer
            self._buffer = room
        self._buffer[:, filled] = True
        self._filled = filled + 1

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows at `index` (with their spare columns)."""
        self._buffer = self._buffer[index]
        self._padded = not bool(self.value.all())

    def decode_mask(self) -> torch.Tensor:
        """What a decode step's forward pass takes: the 4D view where it applies (see the module
        docstring: the caller checks the model), else the 2D mask. With no row padded, the 2D
        mask, which transformers turns into no mask at all."""
        mask = self.value
        return mask[:, None, None, :] if self._padded else mask
