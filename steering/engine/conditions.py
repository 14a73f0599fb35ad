"""Conditional steering: a topical dimension steers a turn only when the turn is about it.

In the spirit of IBM's conditional activation steering (CAST, arXiv 2409.05907). A
`Condition` is a direction in one layer's residual stream that points from off-topic prompts
(everyday questions) to prompts about the dimension's subject (spending, for cost), with a
centre (the midpoint of the two classes) and a threshold. A prompt's score is the cosine of
(mean prompt activation − centre) with the direction, so 0 lies halfway between the classes.

- `compute_conditions` fits one per dimension from on-topic and off-topic prompts, at the
  layer that separates them best on held-out folds, with a threshold calibrated on the same
  held-out scores.
- `ConditionalSteering` is what a request carries for its topical dimensions: their
  conditions and what each adds when it applies. The engine (`DecodeBatch`) scores every row
  during its own prefill, in the same forward pass (`ConditionGate`, hooked on the condition
  layer), decides per row and dimension, and from the first generated token on steers the
  row with its style steering plus the dimensions that applied. The prompt itself carries no
  topical steering, so what a row's prompt looks like at the condition layer never depends on
  the decision being made, nor on any other row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .loading import LoadedModel

# Prompt activations are read like the extraction's "mean" read: every token of the prompt but
# the first (the attention sink, whose activations are huge outliers).
CONDITION_FOLDS = 5


@dataclass(frozen=True)
class Condition:
    """When one dimension applies: cos(mean prompt activation at `layer` − `center`,
    `direction`) ≥ `threshold`. `direction` is a unit vector, both are [hidden]."""

    layer: int
    direction: torch.Tensor
    center: torch.Tensor
    threshold: float

    def with_threshold(self, threshold: float | None) -> Condition:
        return self if threshold is None else Condition(self.layer, self.direction, self.center, float(threshold))


@dataclass(frozen=True)
class DimensionDecision:
    applied: bool
    score: float
    threshold: float

    def as_dict(self) -> dict:
        return {"applied": self.applied, "score": round(self.score, 4), "threshold": round(self.threshold, 4)}


@dataclass
class ConditionalSteering:
    """A request's topical dimensions: {dimension: (condition, layer deltas when it applies)}.
    `decision` is filled in by the engine once the prompt has been read (then None no more)."""

    dimensions: dict[str, tuple[Condition, dict[int, torch.Tensor]]]
    decision: dict[str, DimensionDecision] | None = None

    @property
    def layers(self) -> set[int]:
        return {condition.layer for condition, _ in self.dimensions.values()}

    def all_deltas(self) -> dict[int, torch.Tensor]:
        """Every dimension's deltas summed, as if each applied (for engines without conditions)."""
        return add_deltas({}, *(deltas for _, deltas in self.dimensions.values()))

    def decision_dict(self) -> dict[str, dict] | None:
        return None if self.decision is None else {dim: d.as_dict() for dim, d in self.decision.items()}


def add_deltas(base: dict[int, torch.Tensor], *more: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Layer deltas summed layer by layer (a new dict; the inputs are left as they were)."""
    total = dict(base)
    for deltas in more:
        for layer, delta in deltas.items():
            total[layer] = total[layer] + delta if layer in total else delta
    return total


def cosine_scores(activations: torch.Tensor, condition: Condition) -> torch.Tensor:
    """Scores of mean prompt activations ([n, hidden] → [n])."""
    centred = activations.float() - condition.center.to(activations.device)
    direction = condition.direction.to(activations.device)
    return (centred @ direction) / centred.norm(dim=-1).clamp_min(1e-12)


class ConditionGate:
    """Reads the prompts of one batch at their condition layers during its prefill and decides,
    per row, which topical dimensions apply. `lengths` are (prompt tokens, all tokens) per row,
    all tokens counting a resumed answer's; rows are left-padded to `width` columns.

    Each row's mean is its own (a weighted sum over that row's hidden states only), so a
    decision never depends on another row."""

    def __init__(
        self, rows: Sequence[ConditionalSteering | None], lengths: Sequence[tuple[int, int]], width: int
    ) -> None:
        self.rows = list(rows)
        # weights[i, t]: 1/(n − 1) on row i's prompt tokens after its first (a one-token
        # prompt: 1 on it), 0 on padding, on a resumed answer and on rows without conditions.
        weights = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, (row, (prompt, total)) in enumerate(zip(rows, lengths)):
            if row is None:
                continue
            first = width - total + (1 if prompt > 1 else 0)
            stop = width - total + prompt
            weights[i, first:stop] = 1.0 / (stop - first)
        self._weights = weights
        self._sums: dict[int, torch.Tensor] = {}
        self._columns = (0, width)

    @property
    def layers(self) -> set[int]:
        return {layer for row in self.rows if row is not None for layer in row.layers}

    def observers(self, start: int, stop: int) -> dict:
        """Hook callbacks for one prefill pass over columns start…stop − 1."""
        self._columns = (start, stop)
        return {layer: (lambda hidden, layer=layer: self._observe(layer, hidden)) for layer in self.layers}

    def _observe(self, layer: int, hidden: torch.Tensor) -> None:
        start, stop = self._columns
        weights = self._weights[:, start:stop].to(hidden.device)
        # Zeroed, not multiplied by the weights: padding positions can hold NaN, and NaN × 0 is NaN.
        counted = hidden.float().masked_fill((weights == 0)[..., None], 0.0)
        part = torch.einsum("bt,bth->bh", weights, counted)
        self._sums[layer] = part if layer not in self._sums else self._sums[layer] + part

    def select(self, keep: Sequence[int]) -> None:
        """Keep these rows only (the others left the batch during its prefill)."""
        self.rows = [self.rows[i] for i in keep]
        index = torch.as_tensor(list(keep), dtype=torch.long)
        self._weights = self._weights[index]
        self._sums = {layer: sums[index.to(sums.device)] for layer, sums in self._sums.items()}

    def decide(self) -> list[dict[int, torch.Tensor]]:
        """Score every row with conditions, record its decision on its `ConditionalSteering`,
        and return per row the deltas of the dimensions that apply ({} for the others)."""
        added: list[dict[int, torch.Tensor]] = []
        for i, row in enumerate(self.rows):
            if row is None:
                added.append({})
                continue
            decision, applied = {}, []
            for dim, (condition, deltas) in row.dimensions.items():
                score = float(cosine_scores(self._sums[condition.layer][i][None], condition)[0])
                on = math.isfinite(score) and score >= condition.threshold
                decision[dim] = DimensionDecision(on, score, condition.threshold)
                if on:
                    applied.append(deltas)
            row.decision = decision
            added.append(add_deltas({}, *applied))
        return added


# -- fitting conditions ---------------------------------------------------------------------


def fit_condition(layer: int, on_topic: torch.Tensor, off_topic: torch.Tensor, threshold: float = 0.0) -> Condition:
    """The condition from one layer's mean prompt activations ([n, hidden] each)."""
    on_mean, off_mean = on_topic.float().mean(0), off_topic.float().mean(0)
    difference = on_mean - off_mean
    return Condition(layer, difference / difference.norm().clamp_min(1e-12), (on_mean + off_mean) / 2, threshold)


def held_out_scores(on_topic: torch.Tensor, off_topic: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-fold held-out scores (on-topic, off-topic): prompt i of each class is scored by the
    condition fitted without fold i mod k (k = min(5, the smaller class))."""
    folds = min(CONDITION_FOLDS, len(on_topic), len(off_topic))
    if folds < 2:
        condition = fit_condition(layer, on_topic, off_topic)
        return cosine_scores(on_topic, condition), cosine_scores(off_topic, condition)
    on_out, off_out = torch.empty(len(on_topic)), torch.empty(len(off_topic))
    on_fold, off_fold = torch.arange(len(on_topic)) % folds, torch.arange(len(off_topic)) % folds
    for fold in range(folds):
        condition = fit_condition(layer, on_topic[on_fold != fold], off_topic[off_fold != fold])
        on_out[on_fold == fold] = cosine_scores(on_topic[on_fold == fold], condition)
        off_out[off_fold == fold] = cosine_scores(off_topic[off_fold == fold], condition)
    return on_out, off_out


def separation(on_scores: torch.Tensor, off_scores: torch.Tensor) -> float:
    """Fisher's d′ of two sets of scores (0: no separation)."""
    on, off = on_scores.double(), off_scores.double()
    spread = ((on.var(unbiased=False) + off.var(unbiased=False)) / 2).sqrt()
    gap = on.mean() - off.mean()
    return float(gap / spread.clamp_min(1e-6 * abs(float(gap)) + 1e-12))


def calibrate_threshold(on_scores: torch.Tensor, off_scores: torch.Tensor) -> float:
    """The threshold with the best balanced accuracy on held-out scores; among equals, the
    middle of the widest gap, so a prompt between the classes falls on neither by a hair."""
    values = sorted({*on_scores.tolist(), *off_scores.tolist()})
    cuts = [values[0] - 1e-3, *((a + b) / 2 for a, b in zip(values, values[1:])), values[-1] + 1e-3]
    best, best_key = 0.0, None
    for cut in cuts:
        accuracy = float((on_scores >= cut).float().mean() + (off_scores < cut).float().mean()) / 2
        below, above = [v for v in values if v < cut], [v for v in values if v >= cut]
        gap = (min(above) if above else cut) - (max(below) if below else cut)
        key = (round(accuracy, 9), gap)
        if best_key is None or key > best_key:
            best, best_key = cut, key
    return float(best)


@dataclass
class ConditionReport:
    """Why the conditions are what they are: the chosen layer, and per dimension its held-out
    separation at every layer and its held-out accuracy at the calibrated threshold."""

    layer: int
    separation: dict[str, list[float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)


def compute_conditions(
    loaded: LoadedModel,
    on_topic: dict[str, Sequence[str]],
    off_topic: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    progress=None,
) -> tuple[dict[str, Condition], ConditionReport]:
    """One condition per dimension of `on_topic` ({dimension: prompts about it}) against the
    shared `off_topic` prompts (everyday questions about none). Prompts go through the chat
    template, as a chat turn does. All dimensions share one condition layer (one hook, one read
    per batch): among `layers` (default: all but the first), the one with the best mean
    held-out separation. Thresholds are calibrated on the held-out scores at that layer; the
    directions are then fitted on all the prompts."""
    from .extraction import record_activations

    if not off_topic or any(not prompts for prompts in on_topic.values()):
        raise ValueError("Conditions need on-topic prompts for every dimension and off-topic prompts")
    texts = [*off_topic, *(p for prompts in on_topic.values() for p in prompts)]
    acts, _ = record_activations(loaded, [loaded.chat_ids(text) for text in texts], batch_size=batch_size, progress=progress)
    off = acts[: len(off_topic)]
    on, offset = {}, len(off_topic)
    for dim, prompts in on_topic.items():
        on[dim] = acts[offset : offset + len(prompts)]
        offset += len(prompts)
    candidates = list(layers) if layers is not None else list(range(1 if loaded.num_layers > 1 else 0, loaded.num_layers))
    report = ConditionReport(layer=-1)
    for dim in on:
        report.separation[dim] = [
            round(separation(*held_out_scores(on[dim][:, l], off[:, l])), 4) for l in range(loaded.num_layers)
        ]
    mean_sep = {l: sum(report.separation[dim][l] for dim in on) / len(on) for l in candidates}
    layer = max(candidates, key=lambda l: (mean_sep[l], -l))
    report.layer = layer
    conditions = {}
    for dim in on:
        on_scores, off_scores = held_out_scores(on[dim][:, layer], off[:, layer], layer)
        threshold = calibrate_threshold(on_scores, off_scores)
        report.accuracy[dim] = round(
            float((on_scores >= threshold).float().mean() + (off_scores < threshold).float().mean()) / 2, 4
        )
        conditions[dim] = fit_condition(layer, on[dim][:, layer], off[:, layer], threshold)
    return conditions, report
