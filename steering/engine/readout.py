"""The readout: how an answer reads on each dimension, as the model itself represents it.

For each dimension of a vector set, one read layer and one direction there (the dimension's
own vector at that layer, as a unit vector). A token's reading is the projection of the
residual stream at the read layer, at the position that chose the token, onto that
direction, mapped linearly so that the dimension's two reference ends read −1 and +1: the
ends are the mean activations of its negative and positive training examples at the read
layer, read as answers in the chat template like the answers they are compared with
(`ReadoutEnds`, stored in the vector file, measured by `extraction.calibrate_readout` when the
vectors are computed).

What is read is the model's own part of the residual stream: what the forward pass holds at
the read layer minus what steering added directly at that layer and at every steered layer
below it. The residual stream is a sum (embedding + each layer's attention and MLP outputs +
our additions), so that subtraction is exact, and what remains is everything the model
computed, including how it took up the steering. Without it the gauge would mostly echo
the strength it was given (s · range · residual norm along the direction), whatever the text
said; with it a steered answer reads as steered only if the model carries the style on.
The ends are measured unsteered, so they stay comparable with what is left.

It costs one [rows, hidden] × [hidden, dimensions] product per read layer per forward pass,
taken by an observer on the steering hooks (`SteeringHooks.active(steering, observers)`), in
the pass that generates anyway; nothing is run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from .vectorfile import SteeringVectors


@dataclass(frozen=True)
class ReadoutEnds:
    """Where a dimension is read: `layer`, and the mean activations of its `negative` and
    `positive` reference examples there ([hidden] each)."""

    layer: int
    negative: torch.Tensor
    positive: torch.Tensor


def read_layer(vectors: SteeringVectors, dimension: str) -> int:
    """The steered layer that best separates the dimension's ends (held-out `layer_scores`),
    or the middle steered layer when the set has no scores: a steered layer, so that the
    reading is where the steering acts, and the best of them, so that its ends lie far apart."""
    layers = sorted(vectors.layers)
    scores = vectors.layer_scores.get(dimension)
    if not scores:
        return layers[len(layers) // 2]
    return max(layers, key=lambda layer: (scores[layer], -abs(layer - layers[len(layers) // 2])))


@dataclass(frozen=True)
class ReadoutProbe:
    """What a request reads: per dimension (in `dimensions` order) its layer, unit direction
    ([hidden]), and the projections of its ends. The same object serves every request on one
    vector set (`SteeringVectors.readout_probe`)."""

    dimensions: tuple[str, ...]
    layers: tuple[int, ...]
    directions: torch.Tensor  # [dimensions, hidden], float32, unit rows
    negative: torch.Tensor  # [dimensions] projections of the negative end
    positive: torch.Tensor  # [dimensions]


def probe_for(vectors: SteeringVectors) -> ReadoutProbe | None:
    """The probe of a vector set's calibrated dimensions; None when none is calibrated (a set
    computed before the readout: `extraction.calibrate_readout`). A served set keeps its own
    (`SteeringVectors.readout_probe`), made once."""
    dims = [dim for dim in vectors.dimensions if dim in vectors.readout]
    probe = None
    if dims:
        layers = [vectors.readout[dim].layer for dim in dims]
        units = torch.stack([vectors.vectors[dim][layer].float() for dim, layer in zip(dims, layers)])
        units = units / units.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        negative = torch.stack([units[i] @ vectors.readout[dim].negative.float() for i, dim in enumerate(dims)])
        positive = torch.stack([units[i] @ vectors.readout[dim].positive.float() for i, dim in enumerate(dims)])
        probe = ReadoutProbe(tuple(dims), tuple(layers), units, negative, positive)
    return probe


class BatchReadout:
    """The readout of one batch's rows: observers for the read layers, and after each forward
    pass `readings()`, per row its values (a tuple in its probe's dimension order) or None.

    Rows with the same probe share columns; each row's values come from its own hidden state
    and its own steering only, so a row reads the same in a batch as alone. Rebuilt whenever
    the rows or their steering change (a row left, two batches merged)."""

    def __init__(self, probes: Sequence[ReadoutProbe | None], deltas: dict[int, torch.Tensor] | None) -> None:
        self.probes = list(probes)
        distinct: list[ReadoutProbe] = []
        for probe in self.probes:
            if probe is not None and all(probe is not p for p in distinct):
                distinct.append(probe)
        # Columns: every (probe, dimension), grouped by read layer.
        columns = [(p, j) for p in distinct for j in range(len(p.dimensions))]
        self._by_layer: dict[int, list[int]] = {}
        for c, (p, j) in enumerate(columns):
            self._by_layer.setdefault(p.layers[j], []).append(c)
        self._units = {
            layer: torch.stack([columns[c][0].directions[columns[c][1]] for c in cols], dim=1)  # [hidden, k]
            for layer, cols in self._by_layer.items()
        }
        width = len(columns)
        self._low = torch.tensor([float(p.negative[j]) for p, j in columns]) if columns else torch.zeros(0)
        self._high = torch.tensor([float(p.positive[j]) for p, j in columns]) if columns else torch.zeros(0)
        # What steering added along each column, per row: its deltas at and below the read layer.
        self._offset = torch.zeros(len(self.probes), width)
        for layer, cols in self._by_layer.items():
            for steered, delta in (deltas or {}).items():
                if steered <= layer:
                    self._offset[:, cols] += _project(delta.float().cpu(), self._units[layer])
        where = {(id(p), j): c for c, (p, j) in enumerate(columns)}
        self._row_columns = [
            None if probe is None else [where[id(probe), j] for j in range(len(probe.dimensions))]
            for probe in self.probes
        ]
        # Each read layer's projections of the last pass, left on the model's device until
        # `readings()`: copying them out inside the pass would stall a GPU at every read layer.
        self._raw: dict[int, torch.Tensor] = {}
        self._width = width

    @property
    def layers(self) -> list[int]:
        return sorted(self._by_layer)

    @property
    def active(self) -> bool:
        return bool(self._by_layer)

    def observers(self) -> dict:
        return {layer: (lambda hidden, layer=layer: self._observe(layer, hidden)) for layer in self._by_layer}

    def _observe(self, layer: int, hidden: torch.Tensor) -> None:
        last = hidden[:, -1, :].float()
        units = self._units[layer]
        if units.device != last.device:
            units = self._units[layer] = units.to(last.device)
        self._raw[layer] = _project(last, units)

    def readings(self) -> list[tuple[float, ...] | None]:
        """Per row, the values of the last forward pass (−1 and +1 at the ends)."""
        raw = torch.full((len(self.probes), self._width), float("nan"))
        for layer, projections in self._raw.items():
            raw[:, self._by_layer[layer]] = projections.cpu()
        span = (self._high - self._low).clamp_min(1e-12) if len(self._high) else self._high
        values = -1.0 + 2.0 * (raw - self._offset - self._low) / span
        rows = values.tolist()
        return [None if cols is None else tuple(rows[i][c] for c in cols) for i, cols in enumerate(self._row_columns)]


def _project(rows: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """[rows, hidden] · [hidden, k] → [rows, k], each row on its own: a matrix product's kernel
    (and so its rounding) depends on the number of rows, and a row must read the same in a
    batch as alone. A few hundred multiply-adds per row and column: nothing next to a layer."""
    return (rows[:, :, None] * units[None]).sum(1)


def summarise(dimensions: Sequence[str], readings: Sequence[Sequence[float]], *, digits: int = 3) -> dict:
    """An answer's readout: {"dimensions", "mean": {dimension: mean over its tokens},
    "tokens": [[one value per dimension] per token]}; means are None for an answer of no token."""
    count = len(readings)
    means = {
        dim: (round(sum(r[i] for r in readings) / count, digits) if count else None)
        for i, dim in enumerate(dimensions)
    }
    return {
        "dimensions": list(dimensions),
        "mean": means,
        "tokens": [[round(v, digits) for v in r] for r in readings],
    }


# -- in the vector file: `readout.negative.<dim>` and `readout.positive.<dim>` ([hidden] each),
# with the read layer in the metadata's `readout` ({dim: {"layer"}}).


def ends_tensors(readout: dict[str, ReadoutEnds]) -> dict[str, torch.Tensor]:
    tensors = {}
    for dim, ends in readout.items():
        tensors[f"readout.negative.{dim}"] = ends.negative.float().contiguous()
        tensors[f"readout.positive.{dim}"] = ends.positive.float().contiguous()
    return tensors


def ends_from_file(tensors: dict[str, torch.Tensor], meta) -> dict[str, ReadoutEnds]:
    """The ends stored in a file; ValueError (the file's fault) when they are malformed."""
    if not isinstance(meta, dict):
        raise ValueError("readout must map dimensions to {layer: integer}")
    ends = {}
    for dim, entry in meta.items():
        negative, positive = tensors.get(f"readout.negative.{dim}"), tensors.get(f"readout.positive.{dim}")
        layer = entry.get("layer") if isinstance(entry, dict) else None
        if negative is None or positive is None or not isinstance(layer, int) or isinstance(layer, bool):
            raise ValueError(f"the readout of {str(dim)[:60]!r} lacks its layer or an end's tensor")
        ends[dim] = ReadoutEnds(layer, negative.float(), positive.float())
    return ends


def ends_problems(readout: dict[str, ReadoutEnds], vectors: dict, num_layers: int, hidden_size: int) -> list[str]:
    problems = []
    for dim, ends in readout.items():
        if dim not in vectors:
            problems.append(f"readout names unknown dimension {str(dim)[:60]!r}")
        elif not 0 <= ends.layer < num_layers:
            problems.append(f"readout of {dim!r} is at layer {ends.layer}, not one of 0…{num_layers - 1}")
        elif not all(tuple(t.shape) == (hidden_size,) and torch.isfinite(t).all() for t in (ends.negative, ends.positive)):
            problems.append(f"readout ends of {dim!r} must be {hidden_size} finite values each")
    return problems
