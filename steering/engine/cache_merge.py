"""Stacking and trimming the KV caches of two decode batches, so that newcomers can join a
running batch (`DecodeBatch.merge`) and a batch whose longest rows left sheds the padding no
row attends to any more. Only transformers' `DynamicCache` of full-attention, sliding-window
(and our `GrowingLayer`) layers can be merged; `cache_is_joinable` says whether a cache is one.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from .kvcache import GrowingLayer

_JOINABLE_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer, GrowingLayer)


def cache_is_joinable(cache) -> bool:
    return (
        type(cache) is DynamicCache
        and not cache.offloading
        and bool(cache.layers)
        and all(type(layer) in _JOINABLE_LAYERS and layer.is_initialized for layer in cache.layers)
    )


def pad_columns(tensor: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    """`tensor` left-padded with zeros along `dim` to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def joined_layer(mine, theirs) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Keys, values (and for a sliding-window layer the number of tokens seen) of two cache
    layers stacked along the batch. A sliding layer keeps the most recent tokens only, so its
    stored length can be shorter than what it has seen; both sides are right-aligned either
    way, which keeps each row's distances between tokens as they were."""
    if type(mine) is not type(theirs):
        raise ValueError(f"Cannot merge a {type(mine).__name__} with a {type(theirs).__name__}")
    length = max(mine.keys.shape[-2], theirs.keys.shape[-2])
    keys = torch.cat([pad_columns(mine.keys, length, -2), pad_columns(theirs.keys, length, -2)])
    values = torch.cat([pad_columns(mine.values, length, -2), pad_columns(theirs.values, length, -2)])
    seen = max(mine.cumulative_length, theirs.cumulative_length) if isinstance(mine, DynamicSlidingWindowLayer) else None
    return keys, values, seen


def trim_layer(layer, columns: int) -> None:
    """Drop the oldest `columns` tokens of a cache layer; a sliding-window layer may hold
    fewer than it has seen, and drops only those of the `columns` it still holds."""
    if isinstance(layer, DynamicSlidingWindowLayer):
        already_gone = layer.cumulative_length - layer.keys.shape[-2]
        drop = max(0, columns - already_gone)
        layer.cumulative_length -= columns
    else:
        drop = columns
    layer.keys = layer.keys[:, :, drop:, :]
    layer.values = layer.values[:, :, drop:, :]
