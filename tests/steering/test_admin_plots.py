"""A vector set's plots in the admin (issue 27, part 5): per dimension, Effect, relevance and
perplexity against strength with the functional range marked, and the layer scores that chose
its layers, drawn by matplotlib as SVG images of their own."""

import pytest
import torch
from django.urls import reverse

from steering.models import Evaluation
from steering.services import vector_sets
from tests.api.conftest import SMOLLM_LAYERS, make_vectors

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def plotted_set():
    """A ready set as a computation leaves it: layer scores in its file, the top 4 layers
    steered, its range search kept, and one evaluation of formality."""
    for name in ("formality", "cost"):
        vector_sets.dimension_import_default(name=name)
    vectors = make_vectors(["formality", "cost"], range_=0.045)
    vectors.layer_scores = {d: torch.linspace(0.5, 0.9, SMOLLM_LAYERS).tolist() for d in ("formality", "cost")}
    vectors.layers = [26, 27, 28, 29]
    vector_set = vector_sets.vector_set_register(vectors=vectors, name="plotted")
    vector_set.top_k = 4
    vector_set.range_search = {
        d: {"candidates": [0.03, 0.045, 0.06], "ppl_ratio": [1.1, 1.3, 2.9], "relevance": [0.97, 0.93, None]}
        for d in ("formality", "cost")
    }
    vector_set.save()
    Evaluation.objects.create(
        vector_set=vector_set, dimension="formality", strengths=[-1, 0, 1], prompts=["Hi"], status="ready",
        report={"functional_range": 0.045, "points": [
            {"strength": s, "effect": 0.05 * s, "ppl_ratio": 1 + abs(s) / 4, "relevance": 1 - abs(s) / 20}
            for s in (-1.0, 0.0, 1.0)
        ]},
    )
    return vector_set


def test_the_sets_page_shows_a_plot_per_dimension_and_the_layer_scores(client, charlie, plotted_set):
    client.force_login(charlie)
    page = client.get(reverse("admin:steering_vectorset_change", args=[plotted_set.pk])).content.decode()
    for name in ("formality", "cost"):
        assert reverse("admin:steering_vectorset_dimension_plot", args=[plotted_set.pk, name]) in page
    assert reverse("admin:steering_vectorset_layers_plot", args=[plotted_set.pk]) in page
    evaluation = Evaluation.objects.get()
    assert f'<a href="{reverse("admin:steering_evaluation_change", args=[evaluation.pk])}">evaluation {evaluation.pk}</a>' in page
    assert "No evaluation of this dimension yet." in page  # cost
    # Evaluate and GGUF are on the set's page itself.
    assert reverse("admin:steering_vectorset_evaluate", args=[plotted_set.pk]) in page
    assert reverse("admin:steering_vectorset_export_gguf", args=[plotted_set.pk]) in page


def test_a_dimensions_plot_is_an_svg_with_the_functional_range_marked(client, charlie, plotted_set):
    client.force_login(charlie)
    response = client.get(reverse("admin:steering_vectorset_dimension_plot", args=[plotted_set.pk, "formality"]))
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert response["Content-Security-Policy"].startswith("default-src 'none'")  # its styles, nothing else
    svg = response.content.decode()
    assert svg.lstrip().startswith("<?xml") and "<script" not in svg
    assert 'id="functional-range-effect"' in svg and 'id="functional-range-quality"' in svg
    assert "formality: Effect (Casual ← → Formal)" in svg and "range ±0.045" in svg
    layers = client.get(reverse("admin:steering_vectorset_layers_plot", args=[plotted_set.pk])).content.decode()
    assert all(f'id="steered-layer-{layer}"' in layers for layer in (26, 27, 28, 29))
    assert 'id="steered-layer-25"' not in layers


def test_a_set_whose_ends_have_their_own_ranges_shows_and_plots_each(client, charlie, plotted_set):
    plotted_set.negative_range = {"formality": 0.03}
    plotted_set.range_search["formality"]["sides"] = {
        "+": {"ppl_ratio": [1.1, 1.3, 2.9], "relevance": [0.97, 0.93, None]},
        "−": {"ppl_ratio": [1.2, 1.9, 4.0], "relevance": [0.95, 0.85, 0.6]},
    }
    plotted_set.save()
    client.force_login(charlie)
    page = client.get(reverse("admin:steering_vectorset_change", args=[plotted_set.pk])).content.decode()
    assert "<td>formality</td><td>Casual</td><td>Formal</td><td>−0.03 / +0.045</td>" in page
    assert "<td>cost</td><td>Budget</td><td>Luxury</td><td>±0.045</td>" in page
    svg = client.get(reverse("admin:steering_vectorset_dimension_plot", args=[plotted_set.pk, "formality"])).content.decode()
    assert "range −0.03 / +0.045" in svg and 'id="functional-range-effect"' in svg


def test_plots_are_staff_only_and_only_of_the_sets_dimensions(client, alice, charlie, plotted_set):
    plot = reverse("admin:steering_vectorset_dimension_plot", args=[plotted_set.pk, "formality"])
    client.force_login(alice)
    assert client.get(plot).status_code == 302  # to the admin's login
    client.force_login(charlie)
    assert client.get(reverse("admin:steering_vectorset_dimension_plot", args=[plotted_set.pk, "age"])).status_code == 404
