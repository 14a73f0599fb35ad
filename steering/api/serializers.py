"""Request and response shapes of the REST API. Validation of shape and bounds lives here;
whether a dimension belongs to a vector set is the model layer's rule (clean_preferences).
The chat's own request and response, with their strength fields, live with its doors
(steering/chat/native.py)."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from steering.chat.native import PreferencesField, StrengthField
from steering.models import (
    Conversation,
    Feedback,
    InteractionLog,
    Message,
    PreferenceDimension,
    PreferenceProfile,
    ProfileUpdate,
    VectorSet,
)


class DimensionSerializer(serializers.ModelSerializer):
    examples = serializers.SerializerMethodField()
    references = serializers.SerializerMethodField()

    class Meta:
        model = PreferenceDimension
        fields = ["name", "negative_label", "positive_label", "description", "examples", "references"]

    def get_examples(self, obj) -> dict[str, int]:
        return {"positive": len(obj.positive_examples), "negative": len(obj.negative_examples)}

    def get_references(self, obj) -> dict[str, int]:
        return {"positive": len(obj.reference_positive), "negative": len(obj.reference_negative)}


class VectorSetSerializer(serializers.ModelSerializer):
    dimensions = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    shared = serializers.SerializerMethodField()
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)  # null: shared
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = VectorSet
        fields = [
            "id", "name", "model_id", "method", "top_k", "dimensions", "status", "progress", "error", "layers",
            "num_layers", "hidden_size", "functional_range", "negative_range", "worded_dimensions", "shared", "owner",
            "created_at", "updated_at", "download_url",
        ]
        read_only_fields = fields

    def get_shared(self, obj) -> bool:
        return obj.owner_id is None

    def get_download_url(self, obj) -> str | None:
        if not obj.is_ready:
            return None
        request = self.context.get("request")
        path = f"/api/vector-sets/{obj.pk}/download/"
        return request.build_absolute_uri(path) if request else path


class VectorSetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    dimensions = serializers.ListField(
        child=serializers.SlugField(max_length=50), min_length=1, max_length=32, help_text="Dimension names."
    )
    method = serializers.ChoiceField(choices=VectorSet.Method.choices, default=VectorSet.Method.CAA)
    top_k = serializers.IntegerField(
        min_value=1,
        max_value=1000,
        required=False,
        allow_null=True,
        help_text="Steer the k layers that separate the two ends best on held-out examples; "
        "omitted: the middle half of the network.",
    )
    shared = serializers.BooleanField(default=False, help_text="Shared with every user (staff only).")

    def validate_dimensions(self, names):
        found = {d.name: d for d in PreferenceDimension.objects.filter(name__in=names, private_to__isnull=True)}
        missing = [n for n in names if n not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown dimensions: {', '.join(missing)}")
        return [found[n] for n in dict.fromkeys(names)]


class SizedUploadSerializer(serializers.Serializer):
    """A serializer whose `file` is refused above STEERLAB_MAX_UPLOAD_BYTES."""

    def validate_file(self, upload):
        if upload.size > settings.STEERLAB_MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(
                f"The file is {upload.size} bytes; the limit is {settings.STEERLAB_MAX_UPLOAD_BYTES}."
            )
        return upload


class VectorSetUploadSerializer(SizedUploadSerializer):
    name = serializers.CharField(max_length=100)
    file = serializers.FileField(help_text="A .safetensors file written by SteerLab (compute_vectors or the engine).")
    shared = serializers.BooleanField(default=False, help_text="Shared with every user (staff only).")


class ProfileDimensionSerializer(serializers.Serializer):
    name = serializers.CharField()
    negative_label = serializers.CharField()
    positive_label = serializers.CharField()
    strength = serializers.FloatField()
    summary = serializers.CharField(help_text='As shown to users, e.g. "35 % Budget".')


class ProfileSerializer(serializers.Serializer):
    vector_set = serializers.IntegerField(
        required=False, min_value=1,
        help_text="The profile's vector set. Written (PATCH or PUT), it chooses that set for your chats: requests "
        "that name no set (the chat page, POST /api/chat/, /v1 with the served model, calibration) steer with it. "
        "It must be a ready set for the model this server runs (else 400).",
    )
    vector_set_name = serializers.CharField(read_only=True)
    chosen = serializers.BooleanField(read_only=True, help_text="Whether this is the set your chats use.")
    mode = serializers.ChoiceField(choices=PreferenceProfile.Mode.choices, required=False)
    strengths = PreferencesField(required=False)
    dimensions = ProfileDimensionSerializer(many=True, read_only=True)
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)
    source = serializers.ChoiceField(
        choices=["api", "select", "reset"], default="api", write_only=True,
        help_text='Recorded in the history: "select" for the chat page\'s sliders, "reset" for its Reset button.',
    )


class ProfileUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProfileUpdate
        fields = ["id", "dimension", "old_strength", "new_strength", "source", "reason", "undone", "created_at"]
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    title = serializers.CharField(
        max_length=200, help_text="Named by the first answer's topic until you rename it.", trim_whitespace=True
    )

    class Meta:
        model = Conversation
        fields = ["id", "title", "vector_set", "created_at", "updated_at"]
        read_only_fields = ["id", "vector_set", "created_at", "updated_at"]


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "content", "interaction", "created_at"]
        read_only_fields = fields


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True, read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]


class ConversationDeletedSerializer(serializers.Serializer):
    deleted = serializers.BooleanField()
    interactions_blanked = serializers.IntegerField(help_text="Logged interactions whose prompt and answer were erased.")


class InteractionSerializer(serializers.ModelSerializer):
    class Meta:
        model = InteractionLog
        fields = [
            "id", "prompt", "response", "strengths", "params", "tokens", "latency_ms", "first_token_ms",
            "status", "error", "source", "session_id", "vector_set", "conversation", "readout", "created_at",
        ]
        read_only_fields = fields


class FeedbackSerializer(serializers.ModelSerializer):
    thumbs = serializers.ChoiceField(choices=[1, -1], required=False, allow_null=True, help_text="1 = up, -1 = down.")
    text = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    learn_status = serializers.ChoiceField(
        choices=Feedback.Learn.choices, read_only=True,
        help_text="What LEARN made of it: off (profile not in LEARN mode), pending, applied, unchanged or failed.",
    )
    learn_note = serializers.CharField(read_only=True, help_text="The same, in words for the user.")
    updates = ProfileUpdateSerializer(
        source="profileupdate_set", many=True, read_only=True, help_text="The profile changes it caused (undoable)."
    )

    class Meta:
        model = Feedback
        fields = [
            "id", "interaction", "other_interaction", "thumbs", "text", "choice", "learn_status", "learn_note",
            "updates", "created_at",
        ]
        read_only_fields = ["id", "interaction", "other_interaction", "created_at"]

    def validate(self, attrs):
        if attrs.get("thumbs") is None and not attrs.get("text", "").strip() and not attrs.get("choice"):
            raise serializers.ValidationError("Give thumbs (1 or -1), a text, or a choice.")
        return attrs


class HealthSerializer(serializers.Serializer):
    """Anonymous callers get `status` alone; the other fields are for staff and the metrics token."""

    status = serializers.CharField()
    database = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    model_loaded = serializers.BooleanField(required=False)
    device = serializers.CharField(allow_null=True, required=False)
    vector_sets_loaded = serializers.ListField(child=serializers.IntegerField(), required=False)
    queue_depth = serializers.DictField(child=serializers.IntegerField(), required=False)
    vector_sets_unavailable = serializers.ListField(child=serializers.DictField(), required=False)


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class CalibrationStartSerializer(serializers.Serializer):
    """GET /api/calibrate/start/ query: which dimension, over how many rounds."""

    dimension = serializers.CharField(max_length=50)
    rounds = serializers.IntegerField(min_value=1, max_value=5, default=3)


class CalibrationChooseSerializer(serializers.Serializer):
    """POST /api/calibrate/choose/: the state the client holds, and the user's choice between
    answer A (steered at low) and answer B (at high)."""

    dimension = serializers.CharField(max_length=50)
    low = StrengthField()
    high = StrengthField()
    round = serializers.IntegerField(min_value=0, max_value=5)
    rounds = serializers.IntegerField(min_value=1, max_value=5, default=3)
    choice = serializers.ChoiceField(choices=Feedback.Choice.choices)
    vector_set = serializers.IntegerField(
        required=False, allow_null=True, help_text="The set you chose (else the site default) when omitted."
    )
    interaction_a = serializers.IntegerField(
        required=False, allow_null=True, help_text="The logged answer A (its interaction_id); with interaction_b, "
        "the choice is logged as feedback on the pair.",
    )
    interaction_b = serializers.IntegerField(required=False, allow_null=True, help_text="The logged answer B.")

    def validate(self, attrs):
        if not attrs["low"] < attrs["high"]:
            raise serializers.ValidationError({"low": ["Must be less than high."]})
        if attrs["round"] >= attrs["rounds"]:
            raise serializers.ValidationError({"round": ["This calibration is already done (round must be less than rounds)."]})
        return attrs


class CalibrationStateSerializer(serializers.Serializer):
    dimension = serializers.CharField()
    low = serializers.FloatField(help_text="Answer A is generated at this strength.")
    high = serializers.FloatField(help_text="Answer B is generated at this strength.")
    round = serializers.IntegerField(help_text="Choices made so far.")
    rounds = serializers.IntegerField()
    done = serializers.BooleanField()
    result = serializers.FloatField(help_text="The calibrated strength: the centre of low…high.")
    question = serializers.CharField()
    vector_set = serializers.IntegerField()
    profile = ProfileSerializer(required=False, allow_null=True, help_text="The updated profile, once done.")
