"""Which layers to steer: the default middle band, held-out scores per layer, and the top-k choice.

The paper steers the k layers whose probe separates the two ends of a dimension best on
held-out data. `held_out_margins` scores one layer's activations with any linear classifier
fitted on the rest; likelihood (exp −log-loss) and separation (d′) summarise the margins,
and `top_layers` turns per-layer scores into the steered layers. Not accuracy: it saturates on
real models (a small model's probe is 95–100 % right on every layer), so the ranking uses
likelihood for the probe and separation for the other methods.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# A linear classifier fitted on (positive, negative) activations: (weight, bias), and
# x · weight + bias > 0 means "positive".
Classifier = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

MAX_FOLDS = 5


def default_layers(num_layers: int) -> list[int]:
    """The middle of the network, where behaviour-level features live: layers from a quarter
    to three quarters of the depth (for SmolLM2's 30 layers, 7…22)."""
    start, stop = num_layers // 4, max(num_layers // 4 + 1, (3 * num_layers) // 4)
    return list(range(start, stop))


def held_out_margins(
    positive: torch.Tensor, negative: torch.Tensor, fit: Classifier, *, unit: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-fold held-out margins x · weight + bias of the classifier `fit` on one layer's
    activations ([n, hidden] each): (margins of the positives, of the negatives), every
    example scored by the classifier fitted without it. With `unit`, the weight is normalised
    first, so margins are distances along the direction and comparable across folds even when
    the classifier's scale is arbitrary (CAA's difference of means).

    Example i of each class goes to fold i mod k, so every fold holds both classes and the
    split is the same on every run; k = min(5, size of the smaller class). With a single
    example in a class nothing can be held out, and the margins are measured on the training
    data instead."""

    def margins(weight, bias, rows):
        if unit:
            norm = weight.norm().clamp_min(1e-12)
            weight, bias = weight / norm, bias / norm
        return rows @ weight + bias

    folds = min(MAX_FOLDS, len(positive), len(negative))
    if folds < 2:
        weight, bias = fit(positive, negative)
        return margins(weight, bias, positive), margins(weight, bias, negative)
    pos_out, neg_out = torch.empty(len(positive)), torch.empty(len(negative))
    pos_fold = torch.arange(len(positive)) % folds
    neg_fold = torch.arange(len(negative)) % folds
    for fold in range(folds):
        weight, bias = fit(positive[pos_fold != fold], negative[neg_fold != fold])
        pos_out[pos_fold == fold] = margins(weight, bias, positive[pos_fold == fold]).float()
        neg_out[neg_fold == fold] = margins(weight, bias, negative[neg_fold == fold]).float()
    return pos_out, neg_out


def held_out_likelihood(positive: torch.Tensor, negative: torch.Tensor, fit: Classifier) -> float:
    """exp(−held-out log-loss) of a probabilistic classifier whose margin is a logit: the
    geometric mean of the probability it gives the true class, 0.5 at chance, 1 when sure and
    right. Unlike accuracy it keeps ranking layers once all of them classify perfectly: a layer
    whose held-out examples sit far from the boundary scores higher than one where they
    scrape past it."""
    pos, neg = held_out_margins(positive, negative, fit)
    log_likelihood = torch.cat([F.logsigmoid(pos.double()), F.logsigmoid(-neg.double())]).mean()
    return round(float(log_likelihood.exp()), 6)


def held_out_separation(positive: torch.Tensor, negative: torch.Tensor, fit: Classifier) -> float:
    """Class separation along a direction on held-out data: the gap between the classes' mean
    distances from the boundary over their pooled standard deviation (Fisher's d′). 0 means
    no separation; it does not saturate, so it ranks layers that all classify perfectly."""
    pos, neg = held_out_margins(positive, negative, fit, unit=True)
    pos, neg = pos.double(), neg.double()
    spread = ((pos.var(unbiased=False) + neg.var(unbiased=False)) / 2).sqrt()
    gap = pos.mean() - neg.mean()
    return round(float(gap / spread.clamp_min(1e-6 * abs(float(gap)) + 1e-12)), 6)


def top_layers(scores: list[float], k: int) -> list[int]:
    """The k best-scoring layers, sorted by index. Ties go to the layer nearer the middle of
    the network (the usual home of behaviour-level features). Layer 0 only sees the
    embeddings plus one block and steering it mostly breaks the text, so it is never chosen
    unless the model has fewer than three layers."""
    num_layers = len(scores)
    candidates = list(range(num_layers)) if num_layers < 3 else list(range(1, num_layers))
    if not 1 <= k <= len(candidates):
        raise ValueError(f"top_k must be between 1 and {len(candidates)} for a {num_layers}-layer model, not {k}")
    middle = (num_layers - 1) / 2
    ranked = sorted(candidates, key=lambda layer: (-scores[layer], abs(layer - middle), layer))
    return sorted(ranked[:k])
