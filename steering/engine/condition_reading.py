"""Reading prompts at the condition layer (see conditions.py): fitting the conditions from
on- and off-topic prompts, and deciding them for the prompts of a batch.

A prompt is read as the extraction's "mean" read reads a text: the mean activation over every
token of the prompt, through the chat template, but the first (the attention sink). All
dimensions share one condition layer, chosen by held-out separation (k-fold, Fisher's d′ of
the cosine scores); each threshold is calibrated on the held-out scores at that layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .conditions import Condition, ConditionGate, PromptRead, cosine_scores
from .extraction import record_activations
from .loading import LoadedModel, pad_left

CONDITION_FOLDS = 5
# The condition layer is the earliest that separates this well, as a share of the best layer's
# separation: on SmolLM2 the best is layer 22 (d′ ≈ 8.6), and layer 10 reaches 84 % of it
# (d′ ≈ 7.2) at less than half the cost of reading up to layer 22.
SEPARATION_SHARE = 0.8


@torch.inference_mode()
def decide(loaded, hooks, requests: Sequence) -> list[dict[int, torch.Tensor]]:
    """Decide the conditions of `requests` (`GenerationRequest`s; those without conditions are
    left alone) and return, per request, the deltas of its topical dimensions that apply ({}
    for none). The prompts of the requests with conditions are read in one pass that stops at
    the deepest condition layer, through `hooks` (which must hook those layers); each row's
    mean is its own, so no row's decision depends on another. A request that comes with its
    decision (a stream resumed on another worker: `ConditionalSteering.decided`) keeps it
    unread: read again in another batch, a bfloat16 score near its threshold could flip, and
    change the steering and the words of an answer half written."""
    added: list[dict[int, torch.Tensor]] = [
        r.conditions.applied_deltas() if r.conditions is not None and r.conditions.decision is not None else {}
        for r in requests
    ]
    rows = [i for i, r in enumerate(requests) if r.conditions is not None and r.conditions.decision is None]
    if not rows:
        return added
    prompts = [requests[i].prompt_ids for i in rows]
    input_ids, mask, positions = pad_left(prompts, loaded.pad_id, loaded.device)
    width = input_ids.shape[1]
    gate = ConditionGate([requests[i].conditions for i in rows], [len(p) for p in prompts], width)
    hooks.attach(sorted(gate.layers))
    try:
        with hooks.active(None, gate.observers(0, width, stop_after=True)):
            loaded.model.base_model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
    except PromptRead:
        pass
    for i, deltas in zip(rows, gate.decide()):
        added[i] = deltas
    return added


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
    per batch): among `layers` (default: all but the first), the earliest whose mean held-out
    separation reaches SEPARATION_SHARE of the best, since a batch's read of its prompts runs
    the model up to that layer. Thresholds are calibrated on the held-out scores at that layer; the
    directions are then fitted on all the prompts."""
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
    best = max(mean_sep.values())
    layer = min(l for l in candidates if mean_sep[l] >= SEPARATION_SHARE * best)
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
