"""The staff admin: dimensions and their examples, vector sets (compute, upload, download,
preview, recompute), and what users did (profiles, conversations, logs, feedback), read-only.

Vector sets are created and uploaded through the services, never by saving a bare row: a
set must have its computation queued, and an upload must be validated before anything is
stored."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from steering import data
from steering.admin_controlvectors import ControlVectorAdminMixin
from steering.engine import VectorFileError
from steering.forms import (
    EvaluationStartForm,
    PreferenceDimensionForm,
    VectorSetChangeForm,
    VectorSetCreateForm,
    VectorSetPreviewForm,
    VectorSetUploadForm,
)
from steering.models import (
    Conversation,
    Evaluation,
    Feedback,
    InteractionLog,
    Message,
    PreferenceDimension,
    PreferenceProfile,
    ProfileUpdate,
    VectorSet,
)
from steering.services import evaluations
from steering.services import vector_sets

admin.site.site_header = "SteerLab administration"
admin.site.site_title = "SteerLab admin"
admin.site.index_title = "Dimensions, vector sets and what users did"

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def max_upload_bytes() -> int:
    return getattr(settings, "STEERLAB_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)


# -- dimensions -------------------------------------------------------------------------------


@admin.register(PreferenceDimension)
class PreferenceDimensionAdmin(admin.ModelAdmin):
    form = PreferenceDimensionForm
    changelist_help = (
        "Preference dimensions are the axes users steer along (negative end ↔ positive end). Their training "
        "examples are what a vector set is computed from; their reference texts only judge the result."
    )
    list_display = [
        "name", "negative_label", "positive_label", "positive_count", "negative_count", "reference_count",
        "created_at",
    ]
    search_fields = ["name", "negative_label", "positive_label", "description"]
    fieldsets = [
        (None, {"fields": ["name", "negative_label", "positive_label", "description"]}),
        (
            "Training examples",
            {
                "fields": ["positive_examples", "negative_examples"],
                "description": "A vector set computed from this dimension uses these texts. Changing them "
                "does not change vector sets already computed: recompute them or create a new one.",
            },
        ),
        ("Reference texts, for evaluation only", {"fields": ["reference_positive", "reference_negative"]}),
        (
            "LEARN: how users ask for each end",
            {
                "fields": ["feedback_positive", "feedback_negative"],
                "description": "Feedback texts on answers are compared with these to find which end a user wants.",
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Vector files and profiles name the dimension: renaming it would orphan them.
        if obj is not None and obj.vector_sets.exists():
            return ["name"]
        return []

    @admin.display(description="positive examples")
    def positive_count(self, obj: PreferenceDimension) -> int:
        return len(obj.positive_examples)

    @admin.display(description="negative examples")
    def negative_count(self, obj: PreferenceDimension) -> int:
        return len(obj.negative_examples)

    @admin.display(description="reference texts (+ / −)")
    def reference_count(self, obj: PreferenceDimension) -> str:
        return f"{len(obj.reference_positive)} / {len(obj.reference_negative)}"


# -- vector sets ------------------------------------------------------------------------------


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
class VectorSetAdmin(ControlVectorAdminMixin, admin.ModelAdmin):
    changelist_help = (
        "A vector set holds one steering vector per dimension for one model. Add one to compute it in the "
        "background from its dimensions' examples, or upload a file computed elsewhere. Shared sets (no "
        "owner) are offered to every user; the newest ready shared set with the most dimensions is the default."
    )
    list_display = [
        "name", "model_column", "method", "status", "progress_bar", "dimension_list", "owner_or_shared", "created_at",
        "file_actions",
    ]
    list_filter = ["status", "method", "model_id", SharedFilter]
    search_fields = ["name", "model_id", "dimensions__name"]
    filter_horizontal = ["dimensions"]
    autocomplete_fields = ["owner"]
    actions = ["recompute"]
    add_fieldsets = [(None, {"fields": ["name", "dimensions", "method", "top_k", "model_id", "owner"]})]
    change_fieldsets = [
        (None, {"fields": ["name", "owner", "prompt_with_steering"]}),
        ("Computation", {"fields": ["model_id", "method", "top_k", "dimensions", "status", "progress_bar", "error"]}),
        ("Vectors", {"fields": ["layers", "num_layers", "hidden_size", "functional_range", "file_link"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]
    computed_fields = [
        "model_id", "method", "top_k", "dimensions", "status", "progress_bar", "error", "layers", "num_layers", "hidden_size",
        "functional_range", "file_link", "created_at", "updated_at",
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
        return format_html(
            '<progress class="vs-progress" value="{}" max="100"></progress> {} %', obj.progress, obj.progress
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
            path("<int:object_id>/recompute/", wrap(require_POST(self.recompute_view)), name=f"{prefix}_recompute"),
            *self.gguf_urls(prefix),
            *super().get_urls(),
        ]

    def _context(self, request, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def _get_or_404(self, request, object_id: int) -> VectorSet:
        return get_object_or_404(self.get_queryset(request), pk=object_id)

    def upload_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        limit = max_upload_bytes()
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
            self.message_user(request, f"“{vector_set.name}” is {vector_set.status}, not ready: nothing to preview.",
                              messages.WARNING)
            return HttpResponseRedirect(self._url("change", vector_set))
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
            self.message_user(request, f"“{vector_set.name}” is {vector_set.status}, not ready: nothing to evaluate.",
                              messages.WARNING)
            return HttpResponseRedirect(self._url("change", vector_set))
        form = EvaluationStartForm(request.POST or None, vector_set=vector_set)
        if request.method == "POST" and form.is_valid():
            try:
                run = evaluations.evaluation_start(
                    vector_set=vector_set,
                    dimension=form.cleaned_data["dimension"].name,
                    strengths=form.cleaned_data["strengths"],
                    prompts=data.neutral_prompts()[: form.cleaned_data["prompts"]],
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


# -- evaluations ---------------------------------------------------------------------------------


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

    @admin.display(description="Spearman ρ")
    def spearman(self, obj: Evaluation):
        return obj.report.get("spearman") if obj.report else None

    @admin.display(description="results")
    def summary_table(self, obj: Evaluation) -> str:
        points = obj.report.get("points") if obj.report else None
        if not points:
            return "—"
        # The steering first, then the baselines it is measured against (plain prompting and
        # prompting + steering), each at the same strengths on the same prompts.
        ways = [("steering", obj.report)] + list((obj.report.get("baselines") or {}).items())
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (name, p["strength"], _fmt(p["effect"]), _fmt(p["perplexity"], 2), _fmt(p["ppl_ratio"], 2),
                 _fmt(p["pne"]), _fmt(p["repetition"], 2), (p["answers"] or [""])[0][:200])
                for name, way in ways
                for p in way["points"]
            ),
        )
        rhos = format_html_join(" · ", "{}: {}", ((name, _fmt(way.get("spearman"), 3)) for name, way in ways))
        return format_html(
            "<table><thead><tr><th>method</th><th>strength</th><th>Effect</th><th>PPL</th><th>PPL / PPL₀</th>"
            "<th>PNE</th><th>repetition</th><th>first answer</th></tr></thead><tbody>{}</tbody></table>"
            "<p>Spearman ρ of Effect with strength: {} · functional range {} · layers {}</p>",
            rows, rhos, obj.report.get("functional_range"), obj.report.get("layers"),
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
            *super().get_urls(),
        ]

    def plot_view(self, request, object_id: int):
        run = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        if not (run.plot and run.plot.storage.exists(run.plot.name)):
            raise Http404("This evaluation has no plot yet.")
        return FileResponse(run.plot.open("rb"), content_type="image/png")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# -- what users did: readable, never edited ---------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what users did, kept as they happened: staff read them, only a superuser
    may delete them (a user's request to erase their data), nobody edits or adds them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ProfileUpdateInline(ReadOnlyInline):
    model = ProfileUpdate
    fields = ["created_at", "dimension", "old_strength", "new_strength", "source", "reason", "undone"]
    verbose_name_plural = "history of changes (newest first)"


@admin.register(PreferenceProfile)
class PreferenceProfileAdmin(ReadOnlyAdmin):
    list_display = ["user", "vector_set", "mode", "strengths", "updated_at"]
    list_filter = ["mode", "vector_set"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "vector_set"]
    inlines = [ProfileUpdateInline]
    changelist_help = (
        "A user's strength per dimension (−100 %…+100 %) on one vector set, and how it was set. Users change "
        "their own profile (sliders, calibration, feedback); every change is in its history."
    )


class MessageInline(ReadOnlyInline):
    model = Message
    fields = ["created_at", "role", "content", "interaction"]
    show_change_link = False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "user", "vector_set", "created_at", "updated_at"]
    search_fields = ["title", "user__username"]
    list_select_related = ["user", "vector_set"]
    inlines = [MessageInline]
    changelist_help = "Users' chat conversations, message by message. Read-only."


class FeedbackInline(ReadOnlyInline):
    model = Feedback
    fk_name = "interaction"
    fields = ["created_at", "thumbs", "text", "choice", "other_interaction", "learn_status", "learn_note"]


@admin.register(InteractionLog)
class InteractionLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "user", "source", "status", "short_prompt", "tokens", "latency_ms", "first_token_ms",
        "vector_set",
    ]
    list_filter = ["status", "source", "vector_set"]
    search_fields = ["user__username", "prompt", "response", "session_id"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "vector_set"]
    inlines = [FeedbackInline]
    changelist_help = (
        "One row per generation: prompt, answer, the steering strengths applied, tokens and timings. "
        "Logs are records and cannot be edited; a superuser may delete them."
    )

    @admin.display(description="prompt")
    def short_prompt(self, obj: InteractionLog) -> str:
        return obj.prompt if len(obj.prompt) <= 80 else obj.prompt[:79] + "…"


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    changelist_help = (
        "Users' judgements of answers: thumbs and text (which LEARN turns into profile changes) and the "
        "choices made while calibrating. Read-only."
    )
    list_display = ["created_at", "user", "interaction", "thumbs", "choice", "short_text"]
    list_filter = ["thumbs", "choice"]
    search_fields = ["user__username", "text"]
    list_select_related = ["user", "interaction"]

    @admin.display(description="text")
    def short_text(self, obj: Feedback) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"


@admin.register(ProfileUpdate)
class ProfileUpdateAdmin(ReadOnlyAdmin):
    changelist_help = "Every change of one strength of one profile, with where it came from and why. Read-only."
    list_display = ["created_at", "profile", "dimension", "old_strength", "new_strength", "source", "undone"]
    list_filter = ["source", "undone", "dimension"]
    search_fields = ["profile__user__username", "dimension", "reason"]
    list_select_related = ["profile__user", "profile__vector_set"]
