"""Conditional steering: a topical dimension steers a turn only when the turn is about it.

In the spirit of IBM's conditional activation steering (CAST, arXiv 2409.05907). A
`Condition` is a direction in one layer's residual stream that points from off-topic prompts
(everyday questions) to prompts about the dimension's subject (spending, for cost), with a
centre (the midpoint of the two classes) and a threshold. A prompt's score is the cosine of
(mean prompt activation − centre) with the direction, so 0 lies halfway between the classes.

- `condition_reading.compute_conditions` fits one per dimension from on-topic and off-topic
  prompts, at an early layer that separates them well on held-out folds, with a threshold
  calibrated on the same held-out scores.
- `ConditionalSteering` is what a request carries for its topical dimensions: their
  conditions and what each adds when it applies. Before a batch's prefill,
  `condition_reading.decide` reads the prompts of its rows that have conditions in one short
  pass that stops at the condition layer (no cache, no steering: the prompt as the conditions
  were fitted on it), decides per row and dimension (`ConditionGate`), and records the
  decision on the request. The row's steering is then its
  style steering plus the dimensions that apply, for its whole prompt and answer, so a chunked
  prefill or a merge into a running batch steers it exactly as an unconditional request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


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
    # The vector set's joint budget (SteeringVectors.within_budget), applied to the final sum,
    # which it caps by the sizes of the terms summed: each topical dimension's (`sizes`) and
    # the always-applied ones' (`always_sizes`).
    budget: Callable[[dict[int, torch.Tensor], Sequence[float]], dict[int, torch.Tensor]] | None = None
    sizes: dict[str, float] = field(default_factory=dict)
    always_sizes: Sequence[float] = ()

    def total(self, always: dict[int, torch.Tensor], applied: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The request's whole addition: its style steering plus the topical deltas that apply
        (every one before a decision, as on an engine without conditions), within the budget."""
        summed = add_deltas(always, applied)
        if self.budget is None:
            return summed
        on = [dim for dim in self.dimensions if self.decision is None or self.decision[dim].applied]
        return self.budget(summed, [*self.always_sizes, *(self.sizes.get(dim, 0.0) for dim in on)])

    @property
    def layers(self) -> set[int]:
        return {condition.layer for condition, _ in self.dimensions.values()}

    def applied_deltas(self) -> dict[int, torch.Tensor]:
        """The deltas of the dimensions the decision applied (none before a decision)."""
        decision = self.decision or {}
        return add_deltas({}, *(deltas for dim, (_, deltas) in self.dimensions.items()
                                if dim in decision and decision[dim].applied))

    def decided(self, decision: dict[str, dict] | None) -> bool:
        """Take `decision` (`decision_dict`'s form, as a resumed stream carries it) as this
        request's, where it covers every dimension; says whether it did."""
        if not decision or set(decision) != set(self.dimensions):
            return False
        self.decision = {dim: DimensionDecision(bool(d["applied"]), float(d["score"]), float(d["threshold"]))
                         for dim, d in decision.items()}
        return True

    def all_deltas(self) -> dict[int, torch.Tensor]:
        """Every dimension's deltas summed, as if each applied (for engines without conditions)."""
        return add_deltas({}, *(deltas for _, deltas in self.dimensions.values()))

    def decision_dict(self) -> dict[str, dict] | None:
        return None if self.decision is None else {dim: d.as_dict() for dim, d in self.decision.items()}


class PromptRead(Exception):
    """Raised by the condition read's hook once the condition layers are read: the rest of
    the forward pass is not needed."""


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
    """Reads the prompts of a batch at their condition layers (through `observers`, hooked on
    those layers) and decides, per row, which topical dimensions apply. `lengths` are (prompt tokens, all tokens) per row,
    all tokens counting a resumed answer's; rows are left-padded to `width` columns.

    Each row's mean is its own (a weighted sum over that row's hidden states only), so a
    decision never depends on another row."""

    def __init__(
        self, rows: Sequence[ConditionalSteering | None], lengths: Sequence[int], width: int
    ) -> None:
        self.rows = list(rows)
        # weights[i, t]: 1/(n − 1) on row i's prompt tokens after its first (a one-token
        # prompt: 1 on it), 0 on padding and on rows without conditions.
        weights = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, (row, length) in enumerate(zip(rows, lengths)):
            if row is not None:
                first = width - length + (1 if length > 1 else 0)
                weights[i, first:] = 1.0 / (width - first)
        self._weights = weights
        self._sums: dict[int, torch.Tensor] = {}
        self._columns = (0, width)

    @property
    def layers(self) -> set[int]:
        return {layer for row in self.rows if row is not None for layer in row.layers}

    def observers(self, start: int, stop: int, *, stop_after: bool = False) -> dict:
        """Hook callbacks for one pass over columns start…stop − 1; with `stop_after`, the
        deepest condition layer ends the pass (`PromptRead`): later layers are not needed."""
        self._columns = (start, stop)
        last = max(self.layers)

        def observe(hidden, layer):
            self._observe(layer, hidden)
            if stop_after and layer == last:
                raise PromptRead

        return {layer: (lambda hidden, layer=layer: observe(hidden, layer)) for layer in self.layers}

    def _observe(self, layer: int, hidden: torch.Tensor) -> None:
        start, stop = self._columns
        weights = self._weights[:, start:stop].to(hidden.device)
        # Zeroed, not multiplied by the weights: padding positions can hold NaN, and NaN × 0 is NaN.
        counted = hidden.float().masked_fill((weights == 0)[..., None], 0.0)
        part = torch.einsum("bt,bth->bh", weights, counted)
        self._sums[layer] = part if layer not in self._sums else self._sums[layer] + part

    def decide(self) -> list[dict[int, torch.Tensor]]:
        """Score every row with conditions, record its decision on its `ConditionalSteering`,
        and return per row the deltas of the dimensions that apply ({} for the others)."""
        added: list[dict[int, torch.Tensor]] = []
        for i, row in enumerate(self.rows):
            if row is None:
                added.append({})
                continue
            decision = {}
            for dim, (condition, _) in row.dimensions.items():
                score = float(cosine_scores(self._sums[condition.layer][i][None], condition)[0])
                decision[dim] = DimensionDecision(math.isfinite(score) and score >= condition.threshold, score,
                                                  condition.threshold)
            row.decision = decision
            added.append(row.applied_deltas())
        return added
