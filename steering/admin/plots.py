"""The plots on a vector set's admin page, drawn on the server by matplotlib as SVG: per
dimension, Effect, relevance and perplexity against strength with the functional range marked,
and the layer scores that chose the steered layers. They are served as images of their own,
not inlined, because matplotlib's SVG styles its shapes with style attributes, which the
pages' Content-Security-Policy (style-src 'self') would refuse.

Where the numbers come from: Effect from the dimension's newest ready evaluation (Effect needs
reference texts and many answers; computing a set does not measure it); perplexity and
relevance from that evaluation and from the range search that chose the range
(VectorSet.range_search); layer scores from the vector file."""

from __future__ import annotations

import contextlib
import io
import math

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from steering import files
from steering.engine import VectorFileError
from steering.engine.vectorfile import range_text
from steering.models import Evaluation, VectorSet

RANGE_COLOUR, PPL_COLOUR, RELEVANCE_COLOUR, EFFECT_COLOUR = "#4c78a8", "#d62728", "#2ca02c", "#1f4e9c"


@contextlib.contextmanager
def _drawing():
    """pyplot, headless, with text kept as text in the SVG (smaller, searchable, sharp)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: servers and CI
    from matplotlib import pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        yield plt


def _svg(plt, figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", facecolor="white")
    plt.close(figure)
    return out.getvalue()


def _finite(values) -> list[float]:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else math.nan for v in values]


def _mark_range(axes, ranges: tuple[float, float], gid: str) -> None:
    """The functional range: shaded from −(negative end's) to +(positive end's), edges drawn."""
    low, high = -ranges[0], ranges[1]
    axes.axvspan(low, high, color=RANGE_COLOUR, alpha=0.1, gid=gid, linewidth=0)
    for edge in (low, high):
        axes.axvline(edge, color=RANGE_COLOUR, linestyle="--", linewidth=0.8)


def dimension_svg(
    *, name: str, labels: tuple[str, str], ranges: tuple[float, float], evaluation: dict | None, searched: dict | None
) -> str:
    """One dimension: Effect (left) and PPL ratio with relevance (right) against strength, in the
    engine's units (a fraction of the residual norm, so that the range search's candidates and
    an evaluation's −1…1 share one axis), with the range marked: `ranges` is (towards the
    negative end, towards the positive end), VectorSet.range_sides. `evaluation`: a report's
    {"points", "functional_range", "negative_range"}; `searched`: VectorSet.range_search[name]."""
    with _drawing() as plt:
        figure, (effect_axes, quality) = plt.subplots(1, 2, figsize=(8.6, 3.0), constrained_layout=True)
        _draw_dimension(effect_axes, quality, name, labels, ranges, evaluation, searched)
        return _svg(plt, figure)


def _draw_dimension(effect_axes, quality, name, labels, ranges, evaluation, searched) -> None:
    report = evaluation or {}
    points = report.get("points") or []
    # The ranges the evaluation ran at (one for both ends unless it recorded a negative one).
    positive = report.get("functional_range") or ranges[1]
    negative = report.get("negative_range") or (positive if report.get("functional_range") else ranges[0])
    xs = [p["strength"] * (negative if p["strength"] < 0 else positive) for p in points]
    low, high = labels
    if points:
        effect_axes.plot(xs, _finite(p.get("effect") for p in points), marker="o", color=EFFECT_COLOUR)
        effect_axes.axhline(0, color="grey", linewidth=0.6)
    else:
        effect_axes.text(0.5, 0.5, "No evaluation yet:\n“Evaluate” measures Effect", ha="center", va="center",
                         transform=effect_axes.transAxes, color="grey")
    effect_axes.set(title=f"{name}: Effect ({low} ← → {high})", xlabel="strength (× residual norm)", ylabel="Effect")
    _mark_range(effect_axes, ranges, "functional-range-effect")

    relevance_axes = quality.twinx()
    if searched and searched.get("candidates"):
        # Each side as the search measured it: the worse of ±candidate drawn on both sides, or,
        # where each end got its own range, each side's own.
        candidates = searched["candidates"]
        both = [-c for c in reversed(candidates)] + list(candidates)
        sides = searched.get("sides") or {}
        minus, plus = sides.get("−", searched), sides.get("+", searched)
        for key, axes, colour in (("ppl_ratio", quality, PPL_COLOUR), ("relevance", relevance_axes, RELEVANCE_COLOUR)):
            axes.plot(both, _finite(minus.get(key, []))[::-1] + _finite(plus.get(key, [])), marker="x", linestyle=":",
                      color=colour)
    if points:
        quality.plot(xs, _finite(p.get("ppl_ratio") for p in points), marker="o", color=PPL_COLOUR)
        relevance_axes.plot(xs, _finite(p.get("relevance") for p in points), marker="o", color=RELEVANCE_COLOUR)
    # The bar the range search holds answers to.
    quality.axhline(settings.STEERLAB_RANGE_PPL_FACTOR, color=PPL_COLOUR, linewidth=0.6, linestyle="-.")
    relevance_axes.axhline(settings.STEERLAB_RANGE_MIN_RELEVANCE, color=RELEVANCE_COLOUR, linewidth=0.6, linestyle="-.")
    quality.set(title=f"perplexity and relevance · range {range_text(ranges[1], ranges[0])}",
                xlabel="strength (× residual norm)")
    quality.set_ylabel("perplexity / unsteered (red)", color=PPL_COLOUR)
    relevance_axes.set_ylabel("relevance (green)", color=RELEVANCE_COLOUR)
    _mark_range(quality, ranges, "functional-range-quality")
    # Strengths are small numbers with long labels (-0.015): a few ticks, not one per 0.005.
    from matplotlib.ticker import MaxNLocator

    for axes in (effect_axes, quality):
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5, symmetric=True))


def layers_svg(*, layer_scores: dict[str, list[float]], layers: list[int]) -> str:
    """Each dimension's score per layer (how well that layer's activations separate the two
    ends on held-out examples), with the steered layers marked."""
    with _drawing() as plt:
        figure, plot = plt.subplots(figsize=(8.6, 2.8), constrained_layout=True)
        _draw_layers(plot, layer_scores, layers)
        return _svg(plt, figure)


def _draw_layers(plot, layer_scores: dict[str, list[float]], layers: list[int]) -> None:
    for layer in layers:
        plot.axvspan(layer - 0.5, layer + 0.5, color=RANGE_COLOUR, alpha=0.12, linewidth=0, gid=f"steered-layer-{layer}")
    for name, scores in sorted(layer_scores.items()):
        plot.plot(range(len(scores)), _finite(scores), marker=".", label=name)
    plot.set(title="Layer scores: the shaded layers are steered", xlabel="layer", ylabel="held-out score")
    plot.legend(fontsize=7, frameon=False, ncol=min(6, len(layer_scores)))


def newest_evaluation(vector_set: VectorSet, dimension: str) -> Evaluation | None:
    return vector_set.evaluations.filter(dimension=dimension, status=Evaluation.Status.READY).first()


def _image(response_text: str) -> HttpResponse:
    response = HttpResponse(response_text, content_type="image/svg+xml")
    # An image of its own: matplotlib's inline styles are allowed here, and nothing else.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["Cache-Control"] = "private, max-age=60"
    return response


class VectorSetPlotsMixin:
    """The plots' read-only field and image views, for VectorSetAdmin."""

    def plot_urls(self, prefix: str) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("<int:object_id>/plots/layers.svg", wrap(self.layers_plot_view), name=f"{prefix}_layers_plot"),
            path("<int:object_id>/plots/<slug:dimension>.svg", wrap(self.dimension_plot_view),
                 name=f"{prefix}_dimension_plot"),
        ]

    @admin.display(description="plots")
    def plots(self, obj: VectorSet) -> str:
        if not obj.is_ready:
            return "—"
        figures = []
        for dimension in obj.dimensions.all():
            run = newest_evaluation(obj, dimension.name)
            source = (
                format_html('Effect from <a href="{}">evaluation {}</a> ({}).',
                            reverse("admin:steering_evaluation_change", args=[run.pk]), run.pk,
                            run.created_at.strftime("%Y-%m-%d"))
                if run else "No evaluation of this dimension yet."
            )
            figures.append((
                reverse("admin:steering_vectorset_dimension_plot", args=[obj.pk, dimension.name]), dimension.name,
                dimension.name, source,
            ))
        html = format_html_join(
            "", '<figure class="vs-figure" data-dimension="{}"><img class="vs-plot-svg" src="{}" alt="{}: Effect, '
            "perplexity and relevance against strength, with the functional range marked\"><figcaption>{} "
            "Shaded between dashed lines: the functional range (a user's −100 %…+100 %). Solid circles: the "
            "evaluation; dotted crosses: the range search that chose the range (the worse of ±strength); dash-dotted: "
            "the bar it held answers to.</figcaption></figure>",
            ((name, url, alt, source) for url, name, alt, source in figures),
        )
        layers = ""
        if self._layer_scores(obj):
            why = ("they chose the steered layers (shaded): the top " + str(obj.top_k)) if obj.top_k else (
                "the middle half of the layers is steered (shaded); no top-k was asked for")
            layers = format_html(
                '<figure class="vs-figure" data-plot="layers"><img class="vs-plot-svg" src="{}" alt="Layer scores, '
                'with the steered layers shaded"><figcaption>How well each layer separates each dimension\'s two '
                "ends on held-out examples; {}.</figcaption></figure>",
                reverse("admin:steering_vectorset_layers_plot", args=[obj.pk]), why,
            )
        return format_html("{}{}", html, layers)

    def _plotted(self, request, object_id: int) -> VectorSet:
        vector_set = self._get_or_404(request, object_id)
        if not self.has_view_permission(request, vector_set):
            raise PermissionDenied
        if not vector_set.is_ready:
            raise Http404("This vector set is not ready.")
        return vector_set

    def dimension_plot_view(self, request, object_id: int, dimension: str):
        vector_set = self._plotted(request, object_id)
        found = vector_set.dimensions.filter(name=dimension).first()
        if found is None or dimension not in vector_set.functional_range:
            raise Http404("No such dimension in this vector set.")
        run = newest_evaluation(vector_set, dimension)
        return _image(dimension_svg(
            name=dimension, labels=(found.negative_label, found.positive_label),
            ranges=vector_set.range_sides(dimension),
            evaluation=run.report if run else None, searched=vector_set.range_search.get(dimension),
        ))

    def layers_plot_view(self, request, object_id: int):
        vector_set = self._plotted(request, object_id)
        scores = self._layer_scores(vector_set)
        if not scores:
            raise Http404("This vector set's file has no layer scores.")
        return _image(layers_svg(layer_scores=scores, layers=vector_set.layers))

    @staticmethod
    def _layer_scores(vector_set: VectorSet) -> dict[str, list[float]]:
        """The file's layer scores; none for a file without them or that cannot be read."""
        if not vector_set.file:
            return {}
        try:
            return files.vectors_load(vector_set.file).layer_scores
        except (OSError, VectorFileError):
            return {}
