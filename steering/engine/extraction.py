"""Recording activations and extracting steering vectors.

`record_activations` runs texts through the model in padded batches and returns, for every
decoder layer at once, one activation per text: the mean over the text's tokens or its last
token. Padding never counts, and neither does the first token, whose activations are huge
outliers (the attention sink) that would swamp a mean. `compute_vectors` turns positive and
negative examples per dimension into `SteeringVectors` by difference of means (CAA).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .models import LoadedModel
from .vectorfile import READS, SteeringVectors

Progress = Callable[[int, int], None]

# Strength 1 adds this fraction of each steered layer's mean residual norm. Measured on
# SmolLM2-135M with the formality vector over its 15 middle layers: 0.02 clearly changes
# the register while the text stays fluent; from 0.04 it starts to repeat and derail.
DEFAULT_FUNCTIONAL_RANGE = 0.02


def default_layers(num_layers: int) -> list[int]:
    """The middle of the network, where behaviour-level features live: layers from a quarter
    to three quarters of the depth (for SmolLM2's 30 layers, 7…22)."""
    start, stop = num_layers // 4, max(num_layers // 4 + 1, (3 * num_layers) // 4)
    return list(range(start, stop))


def _batches(ids: list[list[int]], batch_size: int):
    for start in range(0, len(ids), batch_size):
        yield start, ids[start : start + batch_size]


def pad_left(batch: list[list[int]], pad_id: int, device: torch.device):
    """Left-padded input ids, attention mask and position ids that ignore the padding."""
    width = max(len(row) for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids.to(device), mask.to(device), positions.to(device)


@torch.inference_mode()
def record_activations(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    read: str = "mean",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of every layer for each text: ([texts, layers, hidden], token_norms) where
    token_norms is [layers], the mean residual norm per layer over all counted tokens."""
    if read not in READS:
        raise ValueError(f"read must be one of {', '.join(READS)}, not {read!r}")
    if not texts:
        raise ValueError("No texts to record activations from")
    ids = [loaded.tokenizer(text)["input_ids"] for text in texts]
    short = [i for i, row in enumerate(ids) if len(row) < 2]
    if short:
        raise ValueError(f"Texts {short} are too short: at least two tokens are needed (the first is skipped)")
    # Longest first keeps padding within a batch small.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(texts), loaded.num_layers, loaded.hidden_size)
    norm_sum = torch.zeros(loaded.num_layers, dtype=torch.float64)
    token_count = 0
    captured: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_hook(
            lambda module, args, output, index=index: captured.__setitem__(
                index, output[0] if isinstance(output, tuple) else output
            )
        )
        for index, layer in enumerate(loaded.layers)
    ]
    base = loaded.model.base_model  # skips the LM head: only layer outputs are needed
    try:
        done = 0
        for _, chunk in _batches([ids[i] for i in order], batch_size):
            input_ids, mask, positions = pad_left(chunk, loaded.pad_id, loaded.device)
            base(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
            counted = mask.bool() & (positions > 0)  # [B, T]
            weights = counted / counted.sum(-1, keepdim=True)
            token_count += int(counted.sum())
            for index in range(loaded.num_layers):
                # Zeroed, not multiplied by the mask: with eager attention, padding positions
                # can hold NaN, and NaN × 0 is NaN.
                hidden = captured[index].float().masked_fill(~counted[..., None], 0.0)  # [B, T, H]
                norm_sum[index] += hidden.norm(dim=-1).sum().double().cpu()
                if read == "mean":
                    reduced = torch.einsum("bt,bth->bh", weights, hidden)
                else:
                    reduced = hidden[:, -1, :]  # left padding puts every text's last token last
                for j, row in enumerate(reduced.cpu()):
                    out[order[done + j], index] = row
            done += len(chunk)
            captured.clear()
            if progress:
                progress(done, len(ids))
    finally:
        for handle in handles:
            handle.remove()
    return out, (norm_sum / max(token_count, 1)).float()


def compute_vectors(
    loaded: LoadedModel,
    examples: dict[str, tuple[Sequence[str], Sequence[str]]],
    *,
    method: str = "caa",
    read: str = "mean",
    layers: Sequence[int] | None = None,
    functional_range: float | dict[str, float] = DEFAULT_FUNCTIONAL_RANGE,
    labels: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> SteeringVectors:
    """Steering vectors for each dimension from (positive, negative) example texts.

    Difference of means: v_l = mean(a_l | positive) − mean(a_l | negative), for every layer l.
    `progress(done, total)` is called after each batch, counted over all dimensions."""
    if method != "caa":
        raise ValueError(f"Unknown extraction method {method!r}")
    for dim, (positive, negative) in examples.items():
        if not positive or not negative:
            raise ValueError(f"Dimension {dim!r} needs positive and negative examples")
    total = sum(len(p) + len(n) for p, n in examples.values())
    offset = 0

    def step(done: int, _: int) -> None:
        if progress:
            progress(offset + done, total)

    vectors, norm_parts = {}, []
    for dim, (positive, negative) in examples.items():
        acts, norms = record_activations(
            loaded, [*positive, *negative], read=read, batch_size=batch_size, progress=step
        )
        offset += len(positive) + len(negative)
        vectors[dim] = acts[: len(positive)].mean(0) - acts[len(positive) :].mean(0)
        norm_parts.append(norms)
    ranges = functional_range if isinstance(functional_range, dict) else dict.fromkeys(vectors, functional_range)
    return SteeringVectors(
        model_id=loaded.model_id,
        hidden_size=loaded.hidden_size,
        num_layers=loaded.num_layers,
        layers=list(layers) if layers is not None else default_layers(loaded.num_layers),
        vectors=vectors,
        residual_norms=torch.stack(norm_parts).mean(0),
        functional_range=ranges,
        method=method,
        read=read,
        labels=labels or {},
    )
