"""The admin of preference dimensions: their labels, training examples, reference texts and
LEARN's phrases."""

from __future__ import annotations

from django.contrib import admin

from steering.forms import PreferenceDimensionForm
from steering.models import PreferenceDimension


@admin.register(PreferenceDimension)
class PreferenceDimensionAdmin(admin.ModelAdmin):
    form = PreferenceDimensionForm
    changelist_help = (
        "Preference dimensions are the axes users steer along (negative end ↔ positive end). Their training "
        "examples are what a vector set is computed from; their reference texts only judge the result."
    )
    list_display = [
        "name", "negative_label", "positive_label", "kind", "condition_threshold", "positive_count", "negative_count",
        "reference_count", "created_at",
    ]
    list_filter = ["kind"]
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
        (
            "Conditional steering: when the dimension applies",
            {
                "fields": ["kind", "condition_threshold", "condition_prompts"],
                "description": "A topical dimension steers only the turns about its subject, judged from the prompt "
                "by a condition that a vector set computes with its vectors (from the on-topic questions against "
                "everyday ones). Kind and threshold take effect at once; new questions need a recomputed set.",
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
