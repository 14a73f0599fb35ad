"""The admin of evaluations: read-only runs of the paper's evaluation, with their figures and plot."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from steering.engine.vectorfile import range_text
from steering.admin.vector_sets import VectorSetAdmin, layer_ranges, progress_json
from steering.models import Evaluation


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    """Runs of the paper's evaluation, started from a vector set's "Evaluate" link (or by
    `manage.py evaluate_steering`): read-only, with the report's figures and the plot."""

    changelist_help = (
        "Each evaluation answers neutral questions at several strengths of one dimension and measures Effect "
        "(closeness to the dimension's reference texts), perplexity under the unsteered model, and PNE. Start "
        "one from a ready vector set's “Evaluate” link."
    )
    list_display = ["__str__", "status", "progress_bar", "spearman", "created_by", "created_at"]
    list_filter = ["status", "dimension"]
    list_select_related = ["vector_set", "created_by"]
    fields = [
        "vector_set", "dimension", "strengths", "max_new_tokens", "status", "progress_bar", "error",
        "summary_table", "plot_image", "created_by", "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False  # started from a vector set, which knows its dimensions

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    progress_bar = VectorSetAdmin.progress_bar

    @admin.display(description="Spearman ρ (answers · means)")
    def spearman(self, obj: Evaluation) -> str:
        # The same 3 decimals as the run's page, with the ρ of the means per strength beside it.
        if not obj.report:
            return "—"
        return f"{_fmt(obj.report.get('spearman'))} · {_fmt(obj.report.get('spearman_of_means'))}"

    @admin.display(description="results")
    def summary_table(self, obj: Evaluation) -> str:
        points = obj.report.get("points") if obj.report else None
        if not points:
            return "—"
        # The steering first, then the baselines it is measured against (plain prompting and
        # prompting + steering), each at the same strengths on the same prompts.
        # A worded dimension's steering is measured with its words, as the set serves it.
        steering = "steering + words" if obj.report.get("worded") else "steering"
        ways = [(steering, obj.report)] + list((obj.report.get("baselines") or {}).items())
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                # Reports made before issue 24 have no relevance, degenerate share or composite.
                (name, p["strength"], _fmt(p["effect"]), _fmt(p["perplexity"], 2), _fmt(p["ppl_ratio"], 2),
                 _fmt(p["pne"]), _relevance_cell(p), _fmt(p.get("degenerate"), 2), _fmt(p.get("composite"), 2),
                 _fmt(p["repetition"], 2), (p["answers"] or [""])[0][:200])
                for name, way in ways
                for p in way["points"]
            ),
        )
        rhos = format_html_join(
            " · ", "{}: {} (means: {})",
            ((name, _fmt(way.get("spearman")), _fmt(way.get("spearman_of_means"))) for name, way in ways),
        )
        layers, functional_range = obj.report.get("layers"), obj.report.get("functional_range")
        negative = obj.report.get("negative_range")
        if isinstance(functional_range, (int, float)):
            functional_range = range_text(functional_range, negative if isinstance(negative, (int, float)) else None)
        else:
            functional_range = "—"
        return format_html(
            "<table><thead><tr><th>method</th><th>strength</th><th>Effect</th><th>PPL</th><th>PPL / PPL₀</th>"
            "<th>PNE</th><th>relevance</th><th>degenerate</th><th>composite</th><th>repetition</th><th>first answer</th>"
            "</tr></thead><tbody>{}</tbody></table>"
            '<p>Spearman ρ of Effect with strength: {}</p><p class="help">ρ is computed over every answer '
            "(each prompt at each strength), so answers that vary from prompt to prompt keep it below 1 even "
            "when the mean Effect rises at every step; the ρ of the means per strength (in parentheses) is 1.000 "
            "exactly when the means rise steadily.</p><p>Functional range {} · layers {}</p>"
            "<p>Relevance: the answers' similarity to their prompts over the unsteered answers' (1 = as on-topic; "
            "the functional range keeps it ≥ 0.9); in parentheses, the 90 % interval it could take on other prompts "
            "of the same kind (a bootstrap over these prompts). Degenerate: the share of answers that loop or invent words. "
            "Composite: the harmonic mean of concept (Effect moved), relevance and fluency (docs/evaluation.md).</p>",
            rows, rhos, functional_range,
            layer_ranges(layers) if layers else "—",
        )

    @admin.display(description="plot")
    def plot_image(self, obj: Evaluation) -> str:
        if not obj.plot:
            return "—"
        return format_html('<img src="{}" alt="Effect and perplexity against strength" class="vs-plot">',
                           reverse("admin:steering_evaluation_plot", args=[obj.pk]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:object_id>/plot/", wrap(self.plot_view), name="steering_evaluation_plot"),
            path("<int:object_id>/progress/", wrap(self.progress_view), name="steering_evaluation_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request, object_id: int):
        return progress_json(get_object_or_404(self.get_queryset(request), pk=object_id))

    def plot_view(self, request, object_id: int):
        run = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        if not (run.plot and run.plot.storage.exists(run.plot.name)):
            raise Http404("This evaluation has no plot yet.")
        return FileResponse(run.plot.open("rb"), content_type="image/png")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _relevance_cell(point: dict) -> str:
    """A steered point's relevance with its 90 % interval over the prompts ("0.81 (0.67–0.95)");
    the unsteered point's is 1 by definition, and reports made before the interval have none."""
    interval = point.get("relevance_interval")
    if not point.get("strength") or not interval or None in interval:
        return _fmt(point.get("relevance"), 2)
    return f"{_fmt(point.get('relevance'), 2)} ({_fmt(interval[0], 2)}–{_fmt(interval[1], 2)})"
