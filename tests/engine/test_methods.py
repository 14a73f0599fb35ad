import math

import pytest
import torch

from steering.engine import (
    SteeringVectors, compute_vectors, fit_probe, layer_score, mean_difference, pca_direction,
    probe_direction, record_activations, top_layers,
)
from steering.engine.layers import held_out_margins

from tests.tiny_models import CORPUS, build_tiny

POSITIVE = CORPUS[0::2]
NEGATIVE = CORPUS[1::2]
METHODS = ["caa", "probe", "pca"]


def _synthetic(direction, *, n=40, strength=3.0, seed=0):
    """Unit-variance noise, with the positives shifted along `direction` and negatives against it."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(2 * n, len(direction), generator=generator)
    return noise[:n] + strength * direction, noise[n:] - strength * direction


def _unit(hidden=16, seed=1):
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return vector / vector.norm()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", METHODS)
def test_it_gives_one_finite_vector_per_layer_pointing_to_the_positive_end(family, method):
    tiny = build_tiny(family)
    vectors = compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, method=method)
    vec = vectors.vectors["f"]
    assert vec.shape == (tiny.num_layers, tiny.hidden_size)
    assert torch.isfinite(vec).all()
    assert vectors.method == method
    if method != "caa":
        assert torch.allclose(vec.norm(dim=-1), torch.ones(tiny.num_layers), atol=1e-5)
    pos, _ = record_activations(tiny, POSITIVE)
    neg, _ = record_activations(tiny, NEGATIVE)
    for layer in range(tiny.num_layers):
        assert (pos[:, layer] @ vec[layer]).mean() > (neg[:, layer] @ vec[layer]).mean()
    scores = vectors.layer_scores["f"]
    assert len(scores) == tiny.num_layers and all(math.isfinite(s) for s in scores)
    if method == "probe":  # a likelihood
        assert all(0.0 < s <= 1.0 for s in scores)


@pytest.mark.parametrize("direction_of", [mean_difference, probe_direction, pca_direction])
def test_each_method_recovers_an_injected_direction(direction_of):
    truth = _unit()
    positive, negative = _synthetic(truth)
    found = direction_of(positive, negative)
    assert torch.nn.functional.cosine_similarity(found, truth, dim=0) > 0.9


def test_the_probe_undoes_the_standardisation():
    # A feature with a huge spread but no signal, and the signal on a quiet feature: the
    # raw-space weight must point at the quiet feature, not be inflated by the loud one.
    positive, negative = _synthetic(torch.tensor([0.0, 1.0, 0.0]), strength=1.5)
    positive[:, 0] *= 100
    negative[:, 0] *= 100
    weight, bias = fit_probe(positive, negative)
    assert abs(weight[1]) > 50 * abs(weight[0])
    assert ((positive @ weight + bias) > 0).float().mean() > 0.8


def test_pca_uses_the_first_pairs_when_the_classes_differ_in_size():
    truth = _unit()
    positive, negative = _synthetic(truth)
    assert torch.nn.functional.cosine_similarity(pca_direction(positive, negative[:25]), truth, dim=0) > 0.9


@pytest.mark.parametrize("method", METHODS)
def test_the_ranking_puts_the_informative_layers_first(method):
    truth = _unit()
    layers = []
    for layer in range(6):
        positive, negative = _synthetic(truth, strength=3.0 if layer in (2, 4) else 0.0, seed=layer)
        layers.append(layer_score(method, positive, negative))
    informative, noise = min(layers[2], layers[4]), max(layers[i] for i in (0, 1, 3, 5))
    if method == "probe":  # likelihood: near 1 when sure and right, at most about 0.5 by chance
        assert informative > 0.9 and noise < 0.6
    else:  # d′: several standard deviations apart against about none
        assert informative > 3 and noise < 1
    assert top_layers(layers, 2) == [2, 4]


@pytest.mark.parametrize("method", METHODS)
def test_the_score_keeps_ranking_layers_where_accuracy_saturates(method):
    # Every layer classifies its held-out examples perfectly (as a small model's probe does on
    # nearly every layer), but the classes sit further apart on later layers: accuracy cannot
    # tell them apart; the score must rank them by how far apart they are.
    truth = _unit()
    strengths = [3.5, 4.0, 5.0, 6.0, 7.0]
    layers = [_synthetic(truth, strength=s, seed=0) for s in strengths]
    assert [held_out_accuracy(p, n, fit_probe) for p, n in layers] == [1.0] * len(strengths)
    scores = [layer_score(method, p, n) for p, n in layers]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert top_layers(scores, 2) == [3, 4]


def test_top_layers_breaks_ties_toward_the_middle_and_skips_layer_zero():
    assert top_layers([1.0] * 5, 1) == [2]
    assert top_layers([1.0] * 5, 3) == [1, 2, 3]
    assert top_layers([1.0, 0.5, 0.5, 0.5], 2) == [1, 2]  # layer 0 never, even when it scores best
    assert top_layers([1.0, 0.2], 1) == [0]  # unless there are fewer than three layers
    with pytest.raises(ValueError, match="top_k must be between 1 and 3"):
        top_layers([1.0] * 4, 4)


def held_out_accuracy(positive, negative, fit) -> float:
    """k-fold accuracy of the classifier `fit` on one layer's activations: what the ranking
    does not use, because it saturates (the test above)."""
    pos, neg = held_out_margins(positive, negative, fit)
    hits = int((pos > 0).sum()) + int((neg <= 0).sum())
    return round(hits / (len(pos) + len(neg)), 6)  # rounded so equal accuracies tie exactly


def test_held_out_accuracy_falls_back_to_the_training_data_with_one_example_per_class():
    positive, negative = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    assert held_out_accuracy(positive, negative, fit_probe) == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_top_k_steers_the_best_scoring_layers_and_the_file_keeps_the_scores(method, tmp_path):
    tiny = build_tiny("llama")
    vectors = compute_vectors(tiny, {"a": (POSITIVE, NEGATIVE), "b": (NEGATIVE, POSITIVE)}, method=method, top_k=2)
    mean_scores = [(a + b) / 2 for a, b in zip(vectors.layer_scores["a"], vectors.layer_scores["b"])]
    assert vectors.layers == top_layers(mean_scores, 2)
    assert len(vectors.layers) == 2 and 0 not in vectors.layers
    loaded = SteeringVectors.load(vectors.save(tmp_path / "v.safetensors"))
    assert loaded.layer_scores == vectors.layer_scores
    assert loaded.layers == vectors.layers


def test_it_refuses_layers_and_top_k_together_and_unknown_methods():
    tiny = build_tiny("llama")
    with pytest.raises(ValueError, match="either layers or top_k"):
        compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, layers=[1], top_k=1)
    with pytest.raises(ValueError, match="Unknown extraction method"):
        compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, method="magic")


def test_it_is_deterministic():
    tiny = build_tiny("llama")
    first, second = (compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, method="probe", top_k=2) for _ in range(2))
    assert torch.equal(first.vectors["f"], second.vectors["f"])
    assert first.layer_scores == second.layer_scores and first.layers == second.layers


def test_the_probe_fits_even_when_the_caller_disabled_autograd():
    positive, negative = _synthetic(_unit())
    with torch.inference_mode():
        found = probe_direction(positive, negative)
    assert torch.allclose(found, probe_direction(positive, negative))
