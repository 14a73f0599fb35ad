"""Preference dimensions, the vector sets computed from them, and what users do with them:
profiles, conversations, interaction logs, feedback and the history of profile changes."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from steering.data import catalog
from steering.engine.loading import model_id_for
from steering.engine.request import strength_check
from steering.engine.vectorfile import range_text

log = logging.getLogger(__name__)


def site_model_id() -> str:
    """The id of the model this site serves (as vector files record it): only vector sets for
    it can steer an answer here."""
    return model_id_for(settings.STEERLAB_MODEL)


class PreferenceDimension(models.Model):
    """One axis of preference, negative end ↔ positive end (Casual ↔ Formal). The examples
    train the steering vector; the reference texts, kept apart, judge its effect."""

    class Kind(models.TextChoices):
        STYLE = "style"
        TOPICAL = "topical"

    name = models.SlugField(max_length=50)
    negative_label = models.CharField(max_length=60)
    positive_label = models.CharField(max_length=60)
    description = models.TextField(blank=True)
    positive_examples = models.JSONField(default=list)
    negative_examples = models.JSONField(default=list)
    reference_positive = models.JSONField(default=list)
    reference_negative = models.JSONField(default=list)
    # LEARN: what a user asking for each end says ("I want more luxury" / "too expensive").
    # Feedback is compared with these; empty lists fall back to phrases made from the labels.
    feedback_positive = models.JSONField(default=list, blank=True)
    feedback_negative = models.JSONField(default=list, blank=True)
    # Conditional steering: a style applies to every answer; a topical dimension only to turns
    # about its subject, judged from the prompt's activations (the set's condition for it).
    kind = models.CharField(
        max_length=10, choices=Kind.choices, default=Kind.STYLE,
        help_text="Style: applies to every answer (formality). Topical: applies only when the turn is about "
        "this dimension's subject (cost applies to a question about where to eat, not to one about a password).",
    )
    condition_threshold = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)],
        help_text="Topical only: how much a prompt must look like the on-topic prompts for the dimension to apply, "
        "as a cosine score (−1…1; higher applies less often). Empty: the threshold calibrated with the vector set.",
    )
    condition_prompts = models.JSONField(
        default=list, blank=True,
        help_text="Topical only: user questions about this dimension's subject, which fit its condition against "
        "everyday questions. Empty: the shipped ones for a default dimension; none for others (always applies).",
    )
    # An uploaded set's own dimension, seen only through that set (and deleted with it); the
    # shared catalogue, with unique names, is the dimensions private to no set.
    private_to = models.ForeignKey(
        "VectorSet", null=True, blank=True, on_delete=models.CASCADE, related_name="private_dimensions"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(private_to__isnull=True), name="shared_dimension_name_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.negative_label} ↔ {self.positive_label})"

    def words(self) -> tuple[str, str]:
        """(positive end, negative end) in a few words, for saying a preference in a system
        prompt: the shipped wording of a default dimension, else its labels."""
        try:
            spec = catalog.dimension(self.name) if self.private_to_id is None else {}
        except KeyError:
            spec = {}
        return spec.get("prompt_positive") or self.positive_label, spec.get("prompt_negative") or self.negative_label


class VectorSet(models.Model):
    """Steering vectors for some dimensions on one model, computed in the background.
    Shared sets have no owner and are made by staff; a user's own sets are private."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"
        # Was ready, but its file is missing or unusable; `error` says why (for staff).
        UNAVAILABLE = "unavailable"

    class Method(models.TextChoices):
        CAA = "caa", "Difference of means (CAA)"
        PROBE = "probe", "Logistic-regression probe"
        PCA = "pca", "PCA of paired differences"

    name = models.CharField(max_length=100)
    model_id = models.CharField(max_length=200)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.CAA)
    dimensions = models.ManyToManyField(PreferenceDimension, related_name="vector_sets")
    # Steer the k layers that separate the dimensions' ends best on held-out data (the
    # paper's choice); blank steers the middle half of the network.
    top_k = models.PositiveSmallIntegerField(null=True, blank=True)
    layers = models.JSONField(default=list, blank=True)
    num_layers = models.PositiveIntegerField(null=True, blank=True)
    hidden_size = models.PositiveIntegerField(null=True, blank=True)
    functional_range = models.JSONField(default=dict, blank=True)
    # A dimension's range towards its negative end where it differs from functional_range (then
    # the positive end's): mirrors SteeringVectors.negative_range, for display.
    negative_range = models.JSONField(default=dict, blank=True)
    # What chose each functional range: {dim: {"candidates", "ppl_ratio", "relevance"}}, the
    # worse of ±candidate at each strength tried, and each side's where searched apart (empty for
    # sets made before it was kept).
    range_search = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to="vectors/", blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    # Prompting + steering: each chat through this set also gets a system prompt saying, in
    # words, the strengths of that request (its user's own), e.g. "… strongly prefers luxury".
    prompt_with_steering = models.BooleanField(
        default=False,
        help_text="Also tell the model each request's preferences in a system prompt (built per request from that "
        "user's own strengths; never shown to or shared with anyone else).",
    )
    # Gated prompting + steering (issue 24): these dimensions are also said in words, on each
    # turn they apply to (a topical one only when its condition holds, as for its steering).
    worded_dimensions = models.JSONField(
        default=list, blank=True,
        help_text="Dimensions whose preference is also said in words (\"Answer for someone who strongly prefers "
        "…\"), in that request's system prompt only, and for a topical dimension only on turns about its subject. "
        "Chosen when the set is computed: those whose answers with words and steering still answer the search's "
        "questions. Ignored when \"prompt with steering\" words every dimension on every turn.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="vector_sets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} [{self.model_id}, {self.status}]"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions.all()]

    def range_sides(self, dimension: str) -> tuple[float, float]:
        """(towards the negative end, towards the positive end) of a dimension's range."""
        positive = self.functional_range[dimension]
        return self.negative_range.get(dimension, positive), positive

    def range_text(self, dimension: str) -> str:
        negative, positive = self.range_sides(dimension)
        return range_text(positive, negative)

    def mark_unavailable(self, reason: str) -> None:
        """A ready set whose file turned out missing or unusable: take it out of use, saying why
        (for staff; no path), instead of leaving it "ready" for every request to fail on."""
        log.error("Vector set %s is unavailable: %s", self.pk, reason)
        VectorSet.objects.filter(pk=self.pk, status=VectorSet.Status.READY).update(
            status=VectorSet.Status.UNAVAILABLE, error=reason[:2000]
        )
        self.status, self.error = VectorSet.Status.UNAVAILABLE, reason[:2000]


@receiver(post_delete, sender=VectorSet)
def _delete_vector_file(sender, instance: VectorSet, **kwargs) -> None:
    # After commit: a rolled-back delete must not lose the file. (The serving cache drops
    # the set's vectors through its own receiver, in steering.serving.runtime.)
    if instance.file:
        storage, name = instance.file.storage, instance.file.name
        transaction.on_commit(lambda: storage.delete(name))


class Evaluation(models.Model):
    """One run of the paper's evaluation of a vector set's dimension: answers to neutral
    prompts at several strengths, scored for Effect, perplexity and PNE, computed in the
    background. The report is the engine's Evaluation as JSON; the plot a PNG beside it."""

    Status = VectorSet.Status  # the same life: pending, running, then ready or failed
    # A run's defaults, wherever one is started (the admin's form, evaluate_steering, the service).
    DEFAULT_PROMPTS = 10
    DEFAULT_NEW_TOKENS = 48

    vector_set = models.ForeignKey(VectorSet, on_delete=models.CASCADE, related_name="evaluations")
    dimension = models.SlugField(max_length=50)
    strengths = models.JSONField(default=list)
    prompts = models.JSONField(default=list)
    max_new_tokens = models.PositiveSmallIntegerField(default=DEFAULT_NEW_TOKENS)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True)
    plot = models.FileField(upload_to="evaluations/", blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.vector_set.name} · {self.dimension} [{self.status}]"


@receiver(post_delete, sender=Evaluation)
def _delete_evaluation_plot(sender, instance: Evaluation, **kwargs) -> None:
    if instance.plot:
        storage, name = instance.plot.storage, instance.plot.name
        transaction.on_commit(lambda: storage.delete(name))


def clean_preferences(vector_set: VectorSet, preferences) -> dict[str, float]:
    """`preferences` checked against `vector_set`: a mapping of its own dimensions to finite
    strengths in −1…1. Raises ValueError naming every problem at once."""
    if not isinstance(preferences, dict):
        raise ValueError("preferences must be an object mapping dimension names to strengths in -1…1")
    known = set(vector_set.dimension_names())
    problems, cleaned = [], {}
    for name, value in preferences.items():
        if name not in known:
            problems.append(f"unknown dimension {name!r} (this vector set has: {', '.join(sorted(known)) or 'none'})")
            continue
        try:
            cleaned[name] = strength_check(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return cleaned


class PreferenceProfile(models.Model):
    """A user's strengths for the dimensions of one vector set, and how they were set."""

    class Mode(models.TextChoices):
        SELECT = "select", "Select (sliders)"
        CALIBRATE = "calibrate", "Calibrate (compare answers)"
        LEARN = "learn", "Learn (from feedback)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profiles")
    vector_set = models.ForeignKey(VectorSet, on_delete=models.CASCADE, related_name="profiles")
    strengths = models.JSONField(default=dict, blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.SELECT)
    # When the user chose this profile's set for their chats; the newest choice still usable
    # wins, so a chosen set later taken out of use falls back to the one chosen before it.
    chosen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "vector_set"], name="one_profile_per_vector_set")]
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.user} on {self.vector_set.name}"

    def clean(self) -> None:
        try:
            self.strengths = clean_preferences(self.vector_set, self.strengths)
        except ValueError as exc:
            raise ValidationError({"strengths": str(exc)}) from exc

    def save(self, *args, **kwargs) -> None:
        # The invariant holds whichever path writes a profile (service, admin, shell).
        self.strengths = clean_preferences(self.vector_set, self.strengths)
        super().save(*args, **kwargs)


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # Set once the title is final: named by its first answer, or by the user (Rename).
    titled = models.BooleanField(default=False)
    vector_set = models.ForeignKey(VectorSet, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class InteractionLog(models.Model):
    """One generation: what was asked, what came back, with which steering, how fast."""

    class Status(models.TextChoices):
        OK = "ok"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Source(models.TextChoices):
        API = "api", "REST API"
        WEBSOCKET = "ws", "WebSocket chat"
        CALIBRATE = "calibrate", "Calibration"
        OPENAI = "openai", "OpenAI-compatible API"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="interactions")
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL)
    vector_set = models.ForeignKey(VectorSet, null=True, blank=True, on_delete=models.SET_NULL)
    session_id = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.API)
    prompt = models.TextField()
    response = models.TextField(blank=True)
    strengths = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    error = models.TextField(blank=True)
    # Worker mode: [{"worker", "from_token"}, …], one item per inference worker that streamed
    # part of the answer; a second item records a move after the first worker died.
    served_by = models.JSONField(default=list, blank=True)
    # How the answer read on each dimension (engine/readout.py): {"dimensions", "mean":
    # {dimension: value}, "tokens": [[value per dimension] per token]}; null without a readout.
    readout = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.user} {self.status}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    interaction = models.ForeignKey(InteractionLog, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]


class Feedback(models.Model):
    """A user's judgement of one answer: thumbs and an optional text (LEARN), or the choice
    between two answers in a CALIBRATE round."""

    class Choice(models.TextChoices):
        A = "a", "A"
        SLIGHTLY_A = "slightly_a", "Slightly A"
        NONE = "none", "No preference"
        SLIGHTLY_B = "slightly_b", "Slightly B"
        B = "b", "B"

    class Learn(models.TextChoices):
        # What LEARN made of this feedback; "" for feedback it does not read (CALIBRATE choices).
        NONE = "", "—"
        OFF = "off", "Not applied (profile is not in LEARN mode)"
        PENDING = "pending", "Queued"
        APPLIED = "applied", "Profile changed"
        UNCHANGED = "unchanged", "Nothing to change"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback")
    interaction = models.ForeignKey(InteractionLog, on_delete=models.CASCADE, related_name="feedback")
    # CALIBRATE: `interaction` is answer A, this is answer B.
    other_interaction = models.ForeignKey(
        InteractionLog, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    thumbs = models.SmallIntegerField(null=True, blank=True, choices=[(1, "👍"), (-1, "👎")])
    text = models.TextField(blank=True)
    choice = models.CharField(max_length=12, choices=Choice.choices, blank=True)
    learn_status = models.CharField(max_length=10, choices=Learn.choices, blank=True, default=Learn.NONE)
    learn_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"feedback #{self.pk} on #{self.interaction_id}"


class ProfileUpdate(models.Model):
    """One change of one strength, with where it came from, so changes can be shown and undone."""

    class Source(models.TextChoices):
        SELECT = "select", "Slider"
        CALIBRATE = "calibrate", "Calibration"
        LEARN = "learn", "Learned from feedback"
        API = "api", "REST API"
        UNDO = "undo", "Undo"
        RESET = "reset", "Reset"

    profile = models.ForeignKey(PreferenceProfile, on_delete=models.CASCADE, related_name="updates")
    dimension = models.CharField(max_length=50)
    old_strength = models.FloatField()
    new_strength = models.FloatField()
    source = models.CharField(max_length=10, choices=Source.choices)
    reason = models.TextField(blank=True)
    feedback = models.ForeignKey(Feedback, null=True, blank=True, on_delete=models.SET_NULL)
    undone = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.dimension}: {self.old_strength:+.2f} → {self.new_strength:+.2f} ({self.source})"
