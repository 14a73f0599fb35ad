"""Forms of the admin: dimensions with their examples one per line, creating and uploading
vector sets, and the side-by-side preview of a vector set."""

from __future__ import annotations

from django import forms
from django.core.validators import FileExtensionValidator

from steering.models import Evaluation, PreferenceDimension, VectorSet, site_model_id


class LinesField(forms.CharField):
    """A list of texts edited as a textarea, one text per line; blank lines are dropped."""

    widget = forms.Textarea(attrs={"rows": 8, "cols": 100})

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(item).strip() for item in value if str(item).strip()]
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class PreferenceDimensionForm(forms.ModelForm):
    positive_examples = LinesField(
        label="Positive examples",
        help_text="Texts that sound like the positive end, one per line. They train the steering "
        "vector: a dozen per end works, a few dozen is better.",
    )
    negative_examples = LinesField(
        label="Negative examples",
        help_text="Texts that sound like the negative end, one per line, on the same topics as the "
        "positive ones so that only the style differs.",
    )
    reference_positive = LinesField(
        label="Reference texts (positive)",
        help_text="Held-out texts of the positive end, one per line. They never train a vector; "
        "the evaluation compares outputs against them to measure the steering's effect.",
    )
    reference_negative = LinesField(
        label="Reference texts (negative)",
        help_text="Held-out texts of the negative end, one per line, used only for evaluation.",
    )
    feedback_positive = LinesField(
        label="LEARN phrases (positive)",
        help_text="Words and short phrases of a user wanting the positive end (“luxury”, “I want more "
        "luxury”), one per line. Affirmative only: a complaint like “too cheap” is read by flipping "
        "“cheap”. Empty: phrases are made from the labels.",
    )
    feedback_negative = LinesField(
        label="LEARN phrases (negative)",
        help_text="The same for the negative end (“budget”, “I want lower cost”).",
    )
    condition_prompts = LinesField(
        label="On-topic questions",
        help_text=PreferenceDimension._meta.get_field("condition_prompts").help_text + " One per line; a dozen or more.",
    )

    class Meta:
        model = PreferenceDimension
        fields = [
            "name",
            "negative_label",
            "positive_label",
            "description",
            "positive_examples",
            "negative_examples",
            "reference_positive",
            "reference_negative",
            "feedback_positive",
            "feedback_negative",
            "kind",
            "condition_threshold",
            "condition_prompts",
        ]
        help_texts = {
            "name": "Short identifier (letters, digits, hyphens, underscores), as the API and the vector files name "
            "the dimension. It cannot change once a vector set uses it.",
            "negative_label": "What a strength of −100 % means to a user, e.g. “Casual”.",
            "positive_label": "What a strength of +100 % means to a user, e.g. “Formal”.",
            "description": "Optional; shown to administrators only.",
        }


TOP_K_HELP = (
    "Steer the k layers that separate the two ends best on held-out examples (the paper uses 16 for "
    "1.6–2B models, 24 for 7B). Blank: the middle half of the network."
)


class VectorSetCreateForm(forms.ModelForm):
    """A new vector set, computed in the background once saved."""

    # Disabled: the worker computes on the site's model, so any other id could only fail.
    model_id = forms.CharField(
        label="Model",
        disabled=True,
        required=False,
        help_text="The model the vectors are computed on: this server's own. Vectors for another "
        "model must be computed where that model runs, then uploaded there.",
    )

    class Meta:
        model = VectorSet
        fields = ["name", "dimensions", "method", "top_k", "model_id", "owner"]
        labels = {"top_k": "Top k layers"}
        help_texts = {
            "name": "A name users see when they choose a vector set.",
            "dimensions": "The preference dimensions to compute a vector for, from their training examples.",
            "method": "How each vector is extracted from the examples' hidden states. Difference of means "
            "(CAA) is fast and robust; the probe and PCA are the paper's alternatives.",
            "owner": "Leave blank to share the vector set with every user; otherwise only this user sees it.",
            "top_k": TOP_K_HELP,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_id"].initial = site_model_id()
        # An uploaded set's own dimensions have no examples to compute from, and are its alone.
        self.fields["dimensions"].queryset = PreferenceDimension.objects.filter(private_to__isnull=True)

    def clean_owner(self):
        from steering.services.vector_sets import UploadQuotaExceeded, vector_set_quota_check

        owner = self.cleaned_data.get("owner")
        if owner is not None:
            try:  # what vector_set_start holds the owner to, said on the form rather than as a 500
                vector_set_quota_check(owner=owner)
            except UploadQuotaExceeded as exc:
                raise forms.ValidationError(str(exc).replace("You already have", f"{owner} already has")) from exc
        return owner


class VectorSetChangeForm(forms.ModelForm):
    """An existing vector set: only its name and owner change; the rest is what was computed.
    The help texts also label the read-only fields of the page."""

    class Meta:
        model = VectorSet
        fields = ["name", "owner"]
        labels = {"model_id": "Model"}
        help_texts = {
            "name": "A name users see when they choose a vector set.",
            "owner": "Blank: shared with every user. Otherwise only this user sees and uses it.",
            "model_id": "The model the vectors were computed on; they steer only that model.",
            "method": "How the vectors were extracted from the examples' hidden states.",
            "dimensions": "The preference dimensions this set has a vector for.",
            "status": "Pending: queued. Running: being computed. Ready: usable. Failed: see the error, "
            "fix the cause (often a dimension's examples), then recompute.",
            "progress_bar": "Share of the training examples run through the model so far.",
            "error": "Why the last computation failed, if it did.",
            "layers": "The decoder layers the vectors are added to (counted from 0).",
            "top_k": "The k best-separating layers were chosen to steer; blank: the middle half of the network.",
            "num_layers": "Decoder layers of the model the vectors were computed on.",
            "hidden_size": "Width of that model's residual stream.",
            "functional_range": "Per dimension, the strength that ±100 % maps to, as a fraction of the "
            "residual stream's norm: the strongest at which answers still answer (relevance to the question, "
            "perplexity within STEERLAB_RANGE_PPL_FACTOR × the unsteered, no garbled answer), measured when the "
            "set was computed; an end that bears a different push has its own (−negative / +positive).",
            "file_link": "The safetensors file with the vectors; deleting the vector set deletes it.",
        }

    # The dimensions said in words too: chosen among the set's own, as checkboxes (a JSON list
    # in the row).
    worded_dimensions = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Worded dimensions",
        help_text=VectorSet._meta.get_field("worded_dimensions").help_text,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "worded_dimensions" in self.fields:
            names = self.instance.dimension_names() if self.instance.pk else []
            self.fields["worded_dimensions"].choices = [(name, name) for name in names]

    def clean_worded_dimensions(self) -> list[str]:
        return sorted(self.cleaned_data.get("worded_dimensions") or [])


class SizedUploadForm(forms.Form):
    """A form with a `file` field refused above `max_bytes` (the admin passes the setting)."""

    def __init__(self, *args, max_bytes: int, setting: str = "STEERLAB_MAX_UPLOAD_BYTES", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_bytes, self.setting = max_bytes, setting

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > self.max_bytes:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {self.max_bytes:,} bytes "
                f"(setting {self.setting})."
            )
        return upload


class VectorSetUploadForm(SizedUploadForm):
    name = forms.CharField(max_length=100, help_text="A name users see when they choose a vector set.")
    file = forms.FileField(
        label="Vector file",
        validators=[FileExtensionValidator(["safetensors"])],
        help_text="A .safetensors file written by SteerLab (compute_vectors, the engine, or a download "
        "from another server) for this server's model. It is checked before anything is saved: "
        "tensor shapes and types, finite values, and the model id, layer count and hidden size.",
    )


class _OneDimensionForm(forms.Form):
    """A form about one dimension of a given vector set, chosen from that set's dimensions."""

    dimension_help = ""
    dimension = forms.ModelChoiceField(queryset=PreferenceDimension.objects.none(), empty_label=None)

    def __init__(self, *args, vector_set: VectorSet, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dimension"].queryset = vector_set.dimensions.all()
        self.fields["dimension"].help_text = self.dimension_help


class EvaluationStartForm(_OneDimensionForm):
    dimension_help = (
        "Answers are scored against this dimension's reference texts (Effect) and under the "
        "unsteered model (perplexity)."
    )
    strengths = forms.CharField(
        initial="-1, -0.5, 0, 0.5, 1",
        help_text="Comma-separated strengths in −1…1 (−100 %…+100 %); 0 is always measured, PNE compares with it.",
    )
    prompts = forms.IntegerField(
        label="Prompts",
        initial=Evaluation.DEFAULT_PROMPTS,
        min_value=1,
        max_value=40,
        help_text="How many of the shipped neutral questions to answer at every strength.",
    )
    max_new_tokens = forms.IntegerField(
        label="Max new tokens", initial=Evaluation.DEFAULT_NEW_TOKENS, min_value=4, max_value=256
    )

    def clean_strengths(self) -> list[float]:
        try:
            values = [float(part) for part in self.cleaned_data["strengths"].split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError("Give numbers separated by commas, e.g. -1, 0, 1.") from None
        if not values or not all(-1 <= v <= 1 for v in values):
            raise forms.ValidationError("Give one or more strengths between -1 and 1.")
        return values


DEFAULT_PREVIEW_PROMPT = "What should I cook for dinner tonight?"


class VectorSetPreviewForm(_OneDimensionForm):
    dimension_help = "The answer is generated at −100 %, 0 and +100 % of this dimension, all else equal."
    prompt = forms.CharField(
        initial=DEFAULT_PREVIEW_PROMPT,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="A neutral question works best: the differences then come from the steering alone.",
    )
    max_new_tokens = forms.IntegerField(
        label="Max new tokens",
        initial=60,
        min_value=1,
        max_value=512,
        help_text="Length of each answer, in tokens. Generation is greedy, so the three answers differ "
        "only by their steering.",
    )
