"""The admin of vector sets: compute, upload, download, preview, evaluate, recompute (GGUF:
gguf.py). Sets are created and uploaded through the services, never by saving a
bare row: a set must have its computation queued, and an upload must be validated before
anything is stored."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from steering.data import catalog
from steering.admin.gguf import ControlVectorAdminMixin
from steering.admin.plots import VectorSetPlotsMixin
from steering.engine import VectorFileError
from steering.forms import (
    EvaluationStartForm,
    VectorSetChangeForm,
    VectorSetCreateForm,
    VectorSetPreviewForm,
    VectorSetUploadForm,
)
from steering.models import VectorSet
from steering.services import evaluations, vector_sets


class SharedFilter(admin.SimpleListFilter):
    title = "shared"
    parameter_name = "shared"

    def lookups(self, request, model_admin):
        return [("yes", "Shared with every user"), ("no", "A user's own")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(owner__isnull=self.value() == "yes")
        return queryset


@admin.register(VectorSet)
class VectorSetAdmin(ControlVectorAdminMixin, VectorSetPlotsMixin, admin.ModelAdmin):
    changelist_help = (
        "A vector set holds one steering vector per dimension for one model. Add one to compute it in the "
        "background from its dimensions' examples, or upload a file computed elsewhere. Shared sets (no "
        "owner) are offered to every user; the newest ready shared set with the most dimensions is the default."
    )
    # The row's actions right after its name: at 1366 px the last columns fall off the screen.
    list_display = [
        "name", "file_actions", "status", "progress_bar", "dimension_list", "method", "owner_or_shared", "model_column",
        "created_at",
    ]
    list_filter = ["status", "method", "model_id", SharedFilter]
    search_fields = ["name", "model_id", "dimensions__name"]
    filter_horizontal = ["dimensions"]
    autocomplete_fields = ["owner"]
    actions = ["recompute"]
    add_fieldsets = [(None, {"fields": ["name", "dimensions", "method", "top_k", "model_id", "owner"]})]
    change_fieldsets = [
        (None, {"fields": ["name", "owner", "prompt_with_steering", "worded_dimensions"]}),
        ("Computation", {"fields": ["model_id", "method", "top_k", "dimensions", "status", "progress_bar", "error"]}),
        ("Vectors", {"fields": ["layer_summary", "num_layers", "hidden_size", "range_table", "file_link"]}),
        ("Plots", {"fields": ["plots"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]
    computed_fields = [
        "model_id", "method", "top_k", "dimensions", "status", "progress_bar", "error", "layer_summary", "num_layers",
        "hidden_size", "range_table", "file_link", "plots", "created_at", "updated_at",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").prefetch_related("dimensions")

    def get_fieldsets(self, request, obj=None):
        return self.change_fieldsets if obj is not None else self.add_fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.computed_fields if obj is not None else []

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = VectorSetChangeForm if obj is not None else VectorSetCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj: VectorSet, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = vector_sets.vector_set_start(
            name=form.cleaned_data["name"],
            dimensions=form.cleaned_data["dimensions"],
            method=form.cleaned_data["method"],
            top_k=form.cleaned_data["top_k"],
            owner=form.cleaned_data["owner"],
        )
        # The admin goes on with `obj` (history entry, redirect): make it the row just created.
        obj.pk, obj.model_id, obj.status = created.pk, created.model_id, created.status
        obj._state.adding, obj._state.db = False, created._state.db
        self.message_user(
            request,
            f"The computation of “{created.name}” is queued; its status and progress show in the list.",
            messages.INFO,
        )

    def save_related(self, request, form, formsets, change: bool) -> None:
        if change:  # on add, vector_set_start has set the dimensions already
            super().save_related(request, form, formsets, change)

    # -- columns and read-only fields ---------------------------------------------------------

    @admin.display(description="progress")
    def progress_bar(self, obj: VectorSet) -> str:
        # static/js/admin-progress.js polls data-url while the job runs and updates the bar.
        return progress_html(obj, reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_progress", args=[obj.pk]))

    @admin.display(description="layers")
    def layer_summary(self, obj: VectorSet) -> str:
        if not obj.layers:
            return "—"
        if obj.top_k:
            why = f"the {obj.top_k} layers whose activations separate the dimensions' two ends best on held-out examples"
        else:
            why = "the middle half of the model's layers (no top-k asked for)"
        return format_html(
            '<span class="vs-layers">{} of {}: {}</span><br><span class="help">Steered: {}.</span>',
            len(obj.layers), obj.num_layers or "?", layer_ranges(obj.layers), why,
        )

    @admin.display(description="functional range")
    def range_table(self, obj: VectorSet) -> str:
        if not obj.functional_range:
            return "—"
        labels = {d.name: (d.negative_label, d.positive_label) for d in obj.dimensions.all()}
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (name, *labels.get(name, ("−", "+")), obj.range_text(name), words_text(obj, name))
                for name in sorted(obj.functional_range)
            ),
        )
        return format_html(
            '<table class="vs-range"><thead><tr><th>dimension</th><th>−100 %</th><th>+100 %</th>'
            "<th>strongest steering at which answers still answer</th><th>also said in words</th></tr></thead>"
            '<tbody>{}</tbody></table><p class="help">A user\'s −100 %…+100 % maps linearly onto this range of the '
            "engine's strength (× the residual stream's norm). It was measured as the strongest steering at which the "
            "answers still answer: relevance to the question, perplexity and no garbled answer, against the unsteered "
            "answers. Where the two ends bear different pushes, each has its own (−negative / +positive). A dimension "
            "also said in words gets them on the turns it applies to; the figures are its answers' at −100 % / +100 % "
            "with words and steering, measured when the set was computed (a topical dimension's the worse of the neutral "
            "questions and open suggestion requests).</p>",
            rows,
        )

    @admin.display(description="model", ordering="model_id")
    def model_column(self, obj: VectorSet) -> str:
        return obj.model_id

    @admin.display(description="dimensions")
    def dimension_list(self, obj: VectorSet) -> str:
        return ", ".join(d.name for d in obj.dimensions.all())

    @admin.display(description="owner", ordering="owner__username")
    def owner_or_shared(self, obj: VectorSet) -> str:
        return obj.owner.get_username() if obj.owner else "shared"

    @admin.display(description="file")
    def file_link(self, obj: VectorSet) -> str:
        if not (obj.is_ready and obj.file):
            return "—"
        return format_html('<a href="{}">Download {}</a>', self._url("download", obj), obj.file.name)

    @admin.display(description="")
    def file_actions(self, obj: VectorSet) -> str:
        if not obj.is_ready:
            return ""
        return format_html(
            '<a href="{}">Download</a> · <a href="{}">GGUF</a> · <a href="{}">Preview</a> · <a href="{}">Evaluate</a>',
            self._url("download", obj),
            self._url("export_gguf", obj),
            self._url("preview", obj),
            self._url("evaluate", obj),
        )

    def _url(self, view: str, obj: VectorSet) -> str:
        return reverse(f"admin:steering_vectorset_{view}", args=[obj.pk])

    # -- recompute ------------------------------------------------------------------------

    @admin.action(description="Recompute the selected failed vector sets", permissions=["change"])
    def recompute(self, request, queryset) -> None:
        queued, skipped = [], []
        for vector_set in queryset:
            if vector_set.status != VectorSet.Status.FAILED:
                skipped.append(vector_set.name)
                continue
            try:
                vector_sets.vector_set_restart(vector_set=vector_set)
            except ValueError:  # another admin queued it a moment ago
                skipped.append(vector_set.name)
            else:
                queued.append(vector_set.name)
        if queued:
            self.message_user(request, f"Queued again: {', '.join(queued)}.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Not failed, so left alone: {', '.join(skipped)}.", messages.WARNING)

    # -- custom views -----------------------------------------------------------------------

    def get_urls(self):
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name=f"{prefix}_upload"),
            path("<int:object_id>/download/", wrap(self.download_view), name=f"{prefix}_download"),
            path("<int:object_id>/preview/", wrap(self.preview_view), name=f"{prefix}_preview"),
            path("<int:object_id>/evaluate/", wrap(self.evaluate_view), name=f"{prefix}_evaluate"),
            path("<int:object_id>/progress/", wrap(self.progress_view), name=f"{prefix}_progress"),
            path("<int:object_id>/recompute/", wrap(require_POST(self.recompute_view)), name=f"{prefix}_recompute"),
            *self.gguf_urls(prefix),
            *self.plot_urls(prefix),
            *super().get_urls(),
        ]

    def progress_view(self, request, object_id: int):
        return progress_json(self._get_or_404(request, object_id))

    def _context(self, request, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def _get_or_404(self, request, object_id: int) -> VectorSet:
        return get_object_or_404(self.get_queryset(request), pk=object_id)

    def _not_ready(self, request, vector_set: VectorSet, verb: str) -> HttpResponseRedirect:
        """Back to a set that is not ready, saying there is nothing to `verb` yet."""
        self.message_user(
            request, f"“{vector_set.name}” is {vector_set.status}, not ready: nothing to {verb}.", messages.WARNING
        )
        return HttpResponseRedirect(self._url("change", vector_set))

    def upload_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        limit = settings.STEERLAB_MAX_UPLOAD_BYTES
        form = VectorSetUploadForm(request.POST or None, request.FILES or None, max_bytes=limit)
        if request.method == "POST" and form.is_valid():
            try:
                vector_set = vector_sets.vector_set_upload(
                    upload=form.cleaned_data["file"], name=form.cleaned_data["name"], owner=None
                )
            except VectorFileError as exc:
                form.add_error("file", str(exc))
            else:
                self.log_addition(request, vector_set, [{"added": {}}])
                self.message_user(
                    request,
                    f"Uploaded “{vector_set.name}”: {', '.join(vector_set.dimension_names())} on layers "
                    f"{vector_set.layers}. It is shared with every user and ready to use.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._url("change", vector_set))
        return TemplateResponse(
            request,
            "admin/steering/vectorset/upload.html",
            self._context(request, title="Upload a vector file", form=form, max_upload_bytes=limit),
        )

    def download_view(self, request, object_id: int):
        vector_set = self._get_or_404(request, object_id)
        if not self.has_view_permission(request, vector_set):
            raise PermissionDenied
        if not (vector_set.is_ready and vector_set.file and vector_set.file.storage.exists(vector_set.file.name)):
            raise Http404("This vector set has no file yet.")
        filename = f"{slugify(vector_set.name) or 'vector-set'}-{vector_set.pk}.safetensors"
        return FileResponse(vector_set.file.open("rb"), as_attachment=True, filename=filename)

    def preview_view(self, request, object_id: int):
        vector_set = self._get_or_404(request, object_id)
        # A preview runs three generations on the shared model: more than viewing.
        if not self.has_change_permission(request, vector_set):
            raise PermissionDenied
        if not vector_set.is_ready:
            return self._not_ready(request, vector_set, "preview")
        form = VectorSetPreviewForm(request.POST or None, vector_set=vector_set)
        columns = None
        if request.method == "POST" and form.is_valid():
            dimension = form.cleaned_data["dimension"]
            try:
                answers = vector_sets.vector_set_preview(
                    vector_set=vector_set,
                    dimension=dimension.name,
                    prompt=form.cleaned_data["prompt"],
                    max_new_tokens=form.cleaned_data["max_new_tokens"],
                )
            except (ValueError, KeyError) as exc:  # a file gone or not fitting the model
                form.add_error(None, str(exc))
            else:
                labels = {-1.0: f"−100 % · {dimension.negative_label}", 0.0: "0 · unsteered",
                          1.0: f"+100 % · {dimension.positive_label}"}
                columns = [(labels[strength], text) for strength, text in sorted(answers.items())]
        return TemplateResponse(
            request,
            "admin/steering/vectorset/preview.html",
            self._context(
                request, title=f"Preview “{vector_set.name}”", original=vector_set, form=form, columns=columns
            ),
        )

    def evaluate_view(self, request, object_id: int):
        vector_set = self._get_or_404(request, object_id)
        # An evaluation is a background job that creates an Evaluation: its add permission.
        if not (self.has_view_permission(request, vector_set) and request.user.has_perm("steering.add_evaluation")):
            raise PermissionDenied
        if not vector_set.is_ready:
            return self._not_ready(request, vector_set, "evaluate")
        form = EvaluationStartForm(request.POST or None, vector_set=vector_set)
        if request.method == "POST" and form.is_valid():
            try:
                run = evaluations.evaluation_start(
                    vector_set=vector_set,
                    dimension=form.cleaned_data["dimension"].name,
                    strengths=form.cleaned_data["strengths"],
                    prompts=catalog.neutral_prompts()[: form.cleaned_data["prompts"]],
                    max_new_tokens=form.cleaned_data["max_new_tokens"],
                    created_by=request.user,
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request, "The evaluation is queued; its progress, report and plot show here.", messages.INFO
                )
                return HttpResponseRedirect(reverse("admin:steering_evaluation_change", args=[run.pk]))
        return TemplateResponse(
            request,
            "admin/steering/vectorset/evaluate.html",
            self._context(request, title=f"Evaluate “{vector_set.name}”", original=vector_set, form=form),
        )

    def recompute_view(self, request, object_id: int):
        vector_set = self._get_or_404(request, object_id)
        if not self.has_change_permission(request, vector_set):
            raise PermissionDenied
        if vector_set.status != VectorSet.Status.FAILED:
            self.message_user(request, "Only a failed vector set is recomputed from here.", messages.WARNING)
        else:
            try:
                vector_sets.vector_set_restart(vector_set=vector_set)
            except ValueError as exc:  # another admin queued it a moment ago
                self.message_user(request, str(exc), messages.WARNING)
                return HttpResponseRedirect(self._url("change", vector_set))
            self.log_change(request, vector_set, [{"changed": {"fields": ["status"]}}])
            self.message_user(request, f"The computation of “{vector_set.name}” is queued again.", messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", vector_set))


def progress_html(obj, url: str) -> str:
    """A job's progress bar (vector set or evaluation) that admin-progress.js keeps live."""
    return format_html(
        '<span class="job-progress" data-url="{}" data-status="{}"><progress class="vs-progress" value="{}" max="100">'
        '</progress> <span class="job-progress-text">{} %</span></span>',
        url, obj.status, obj.progress, obj.progress,
    )


def progress_json(obj) -> JsonResponse:
    return JsonResponse({"status": obj.status, "progress": obj.progress, "error": obj.error})


def words_text(vector_set: VectorSet, name: str) -> str:
    """Whether dimension `name` is also said in words, with its answers' relevance at −1 / +1
    with words, as computing the set measured them."""
    said = "yes" if name in vector_set.worded_dimensions else "no"
    sides = (vector_set.range_search.get(name) or {}).get("words")
    if not sides:
        return said
    kept = [sides.get(side, {}).get("relevance") for side in ("−", "+")]
    return f"{said} (relevance with words {' / '.join('—' if k is None else f'{k:.2f}' for k in kept)})"


def layer_ranges(layers: list[int]) -> str:
    """[3, 4, 5, 9, 11, 12] → "3–5, 9, 11–12"."""
    ranges, ordered = [], sorted(layers)
    start = previous = ordered[0]
    for layer in [*ordered[1:], None]:
        if layer is not None and layer == previous + 1:
            previous = layer
            continue
        ranges.append(str(start) if start == previous else f"{start}–{previous}")
        if layer is not None:
            start = previous = layer
    return ", ".join(ranges)
