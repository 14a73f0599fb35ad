"""A KV-cache layer that writes each step's keys and values into room reserved ahead.

transformers' `DynamicLayer` appends a decode step's keys and values with `torch.cat`, which
copies the whole cache of every layer at every step: 11.5 % of a batched decode forward of
SmolLM2 on the CPU (py-spy, bench/profile_summary.py). `GrowingLayer` keeps the cache in a
buffer with spare columns, writes the new columns in place, and reallocates (with room for
`GROWTH` more steps, or half its length, whichever is more) only when the buffer is full, so
the copying is amortised to a few columns per step.

It is a `DynamicLayer` in every other respect: `keys` and `values` read as the filled part
(a view of the buffer: same shape, same values as the concatenated tensors, so attention
computes the same), and assigning them (`merge`, trimming, transformers' own `crop` and
`batch_select_indices`) adopts the assigned tensor as the new buffer. `grow_cache` switches a
`DynamicCache`'s full-attention layers over after the prefill; sliding-window and other
layer types are left as they are.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

GROWTH = 64  # columns reserved at least whenever the buffer grows


class GrowingLayer(DynamicLayer):
    def __init__(self) -> None:
        # Keys and values keep their own filled lengths: a caller that assigns `keys` first
        # and then reads `values` to assign them (as trimming does) must read the old values.
        self._buffers: dict[str, torch.Tensor | None] = {"keys": None, "values": None}
        self._filled = {"keys": 0, "values": 0}
        super().__init__()

    def _read(self, name: str) -> torch.Tensor | None:
        buffer = self._buffers[name]
        return buffer if buffer is None or buffer.ndim < 3 else buffer[:, :, : self._filled[name]]

    def _adopt(self, name: str, tensor: torch.Tensor | None) -> None:
        self._buffers[name] = tensor
        self._filled[name] = tensor.shape[-2] if tensor is not None and tensor.ndim >= 3 else 0

    # The filled part of the buffers; assigning adopts the tensor as the (full) buffer.
    keys = property(lambda self: self._read("keys"), lambda self, tensor: self._adopt("keys", tensor))
    values = property(lambda self: self._read("values"), lambda self, tensor: self._adopt("values", tensor))

    @property
    def _length(self) -> int:
        return self._filled["keys"]

    @property
    def capacity(self) -> int:
        buffer = self._buffers["keys"]
        return 0 if buffer is None or buffer.ndim < 3 else buffer.shape[-2]

    @classmethod
    def adopt(cls, layer: DynamicLayer) -> GrowingLayer:
        """A growing layer holding what `layer` holds (the tensors themselves, not copies)."""
        grown = cls()
        grown.dtype, grown.device = layer.dtype, layer.device
        grown.is_initialized = layer.is_initialized
        grown.keys, grown.values = layer.keys, layer.values
        return grown

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        length = self._length
        needed = length + key_states.shape[-2]
        if needed <= self.capacity:
            return
        capacity = needed + max(GROWTH, length // 2)

        def room(states: torch.Tensor, filled: torch.Tensor | None) -> torch.Tensor:
            buffer = states.new_empty((*states.shape[:-2], capacity, states.shape[-1]))
            if length:
                buffer[:, :, :length] = filled
            return buffer

        self._buffers = {"keys": room(key_states, self.keys), "values": room(value_states, self.values)}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        length = self._length
        if self._filled["values"] != length:
            raise RuntimeError("The cache's keys and values were set to different lengths")
        if length and key_states.shape[0] != self._buffers["keys"].shape[0]:
            raise ValueError("The new keys' batch size is not the cache's")
        self._reserve(key_states, value_states)
        stop = length + key_states.shape[-2]
        self._buffers["keys"][:, :, length:stop] = key_states
        self._buffers["values"][:, :, length:stop] = value_states
        self._filled = {"keys": stop, "values": stop}
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # The buffers' rows, spare columns included, so the rows left keep their room.
        if self._length:
            self._buffers = {name: buffer[indices] for name, buffer in self._buffers.items()}


def grow_cache(cache) -> None:
    """Switch the full-attention layers of a `DynamicCache` to `GrowingLayer`, in place;
    anything else (other caches, sliding-window layers) is left as it is."""
    if type(cache) is not DynamicCache or getattr(cache, "offloading", False):
        return
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            cache.layers[i] = GrowingLayer.adopt(layer)
