"""Which layers to steer: the default middle band, held-out accuracy per layer, and the top-k choice.

The paper steers the k layers whose probe separates the two ends of a dimension best on
held-out data. `held_out_accuracy` scores one layer's activations with any linear classifier
fitted on the rest, and `top_layers` turns per-layer scores into the steered layers.
"""

from __future__ import annotations

from typing import Callable

import torch

# A linear classifier fitted on (positive, negative) activations: (weight, bias), and
# x · weight + bias > 0 means "positive".
Classifier = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

MAX_FOLDS = 5


def default_layers(num_layers: int) -> list[int]:
    """The middle of the network, where behaviour-level features live: layers from a quarter
    to three quarters of the depth (for SmolLM2's 30 layers, 7…22)."""
    start, stop = num_layers // 4, max(num_layers // 4 + 1, (3 * num_layers) // 4)
    return list(range(start, stop))


def held_out_accuracy(positive: torch.Tensor, negative: torch.Tensor, fit: Classifier) -> float:
    """k-fold accuracy of the classifier `fit` on one layer's activations ([n, hidden] each).

    Example i of each class goes to fold i mod k, so every fold holds both classes and the
    split is the same on every run; k = min(5, size of the smaller class). With a single
    example in a class nothing can be held out, and the accuracy is measured on the training
    data instead."""
    folds = min(MAX_FOLDS, len(positive), len(negative))
    if folds < 2:
        weight, bias = fit(positive, negative)
        return _accuracy(weight, bias, positive, negative)
    correct = total = 0
    pos_fold = torch.arange(len(positive)) % folds
    neg_fold = torch.arange(len(negative)) % folds
    for fold in range(folds):
        weight, bias = fit(positive[pos_fold != fold], negative[neg_fold != fold])
        test_pos, test_neg = positive[pos_fold == fold], negative[neg_fold == fold]
        correct += _accuracy(weight, bias, test_pos, test_neg) * (len(test_pos) + len(test_neg))
        total += len(test_pos) + len(test_neg)
    return round(correct / total, 6)  # rounded so equal accuracies tie exactly


def _accuracy(weight: torch.Tensor, bias: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> float:
    hits = int((positive @ weight + bias > 0).sum()) + int((negative @ weight + bias <= 0).sum())
    return hits / (len(positive) + len(negative))


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
