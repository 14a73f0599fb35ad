"""The chat request's schema, one home for both ways in: POST /api/chat/ (its serializer) and
the websocket's {"type": "generate"} frame (the same fields, plus the conversation). Its fields,
their bounds and defaults, and which of them become generation parameters."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from steering.engine import CHAT_DEFAULTS, LIMITS, MAX_DIMENSIONS, STRENGTH, strength_check
from steering.models import InteractionLog
from steering.chat.turn import ChatTurn


class StrengthField(serializers.FloatField):
    """A strength in −1…1 (the engine's `strength_check`; FloatField alone lets "nan" through)."""

    def __init__(self, **kwargs):
        super().__init__(min_value=STRENGTH.low, max_value=STRENGTH.high, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        value = super().to_internal_value(data)
        try:
            return strength_check(value)
        except ValueError:
            raise serializers.ValidationError("Must be a finite number between -1 and 1.") from None


def limited(name: str, *, high: float | None = None, **kwargs) -> serializers.Field:
    """A field for the generation parameter `name`, bounded by the engine's `LIMITS` (or
    `high`, a site setting below the engine's own bound); a float refuses NaN and infinity."""
    limit = LIMITS[name]
    high = limit.high if high is None else min(high, limit.high)
    if limit.integer:
        return serializers.IntegerField(min_value=int(limit.low), max_value=int(high), **kwargs)
    return FiniteFloatField(min_value=limit.low, max_value=high, low_open=limit.low_open, **kwargs)


class FiniteFloatField(serializers.FloatField):
    def __init__(self, *, low_open: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.low_open = low_open

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value != value or value in (float("inf"), float("-inf")):
            raise serializers.ValidationError("Must be a finite number.")
        if self.low_open and value <= self.min_value:
            raise serializers.ValidationError(f"Must be greater than {self.min_value:g}.")
        return value


class PreferencesField(serializers.DictField):
    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Dimension name → strength in -1…1 (-1 = the negative end, +1 = the positive end).")
        super().__init__(child=StrengthField(), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(value) > MAX_DIMENSIONS:
            raise serializers.ValidationError(f"At most {MAX_DIMENSIONS} dimensions.")
        return value


# The chat request's fields that become GenerationParams (REST and websocket alike).
GENERATION_FIELDS = (
    "max_new_tokens", "temperature", "top_p", "top_k", "seed", "repetition_penalty", "no_repeat_ngram_size",
)


def generation_params(data: dict) -> dict:
    """The generation parameters a validated chat request gives (those it sets)."""
    return {name: data[name] for name in GENERATION_FIELDS if data.get(name) is not None}


def chat_turn(data: dict, *, user, source: str) -> ChatTurn:
    """The turn a validated chat request (REST's body or a websocket generate frame) asks for.
    A CALIBRATE answer is logged as such and never joins a conversation."""
    calibrating = data.get("purpose") == "calibrate"
    return ChatTurn(
        user=user,
        prompt=data["prompt"],
        preferences=data["preferences"],
        vector_set_id=data.get("vector_set"),
        params=generation_params(data),
        session_id=data["session_id"],
        conversation_id=None if calibrating else data.get("conversation_id"),
        new_conversation=data.get("new_conversation", False) and not calibrating,
        source=InteractionLog.Source.CALIBRATE if calibrating else source,
    )


class ChatRequestSerializer(serializers.Serializer):
    prompt = serializers.CharField(max_length=settings.STEERLAB_MAX_PROMPT_CHARS)
    preferences = PreferencesField(required=False, default=dict)
    max_new_tokens = limited("max_new_tokens", high=settings.STEERLAB_MAX_NEW_TOKENS, required=False)
    max_length = limited(
        "max_new_tokens",
        high=settings.STEERLAB_MAX_NEW_TOKENS,
        required=False,
        help_text="The seed API's name for max_new_tokens; max_new_tokens wins when both are given.",
    )
    # Defaults: sampling with a repetition guard (CHAT_DEFAULTS), since greedy answers of a
    # small model loop; temperature 0 is greedy, a seed makes sampling reproducible.
    temperature = limited("temperature", default=CHAT_DEFAULTS.temperature, help_text="0 = greedy.")
    top_p = limited("top_p", default=CHAT_DEFAULTS.top_p)
    top_k = limited("top_k", default=CHAT_DEFAULTS.top_k)
    seed = limited("seed", required=False, allow_null=True)
    repetition_penalty = limited(
        "repetition_penalty", default=CHAT_DEFAULTS.repetition_penalty,
        help_text="Divides the scores of tokens the answer already used (1 = off).",
    )
    no_repeat_ngram_size = limited(
        "no_repeat_ngram_size", default=CHAT_DEFAULTS.no_repeat_ngram_size,
        help_text="No run of this many tokens appears twice in the answer (0 = off).",
    )
    session_id = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    vector_set = serializers.IntegerField(
        required=False, allow_null=True, help_text="Vector set id; the site's default set when omitted."
    )

    def validate(self, attrs):
        attrs["max_new_tokens"] = attrs.get("max_new_tokens") or attrs.pop("max_length", None) or settings.STEERLAB_DEFAULT_NEW_TOKENS
        attrs.pop("max_length", None)
        return attrs


class GenerateFrameSerializer(ChatRequestSerializer):
    """A websocket {"type": "generate"} frame: the REST chat fields, plus the conversation."""

    type = serializers.ChoiceField(choices=["generate"])
    conversation_id = serializers.IntegerField(required=False, allow_null=True)
    new_conversation = serializers.BooleanField(
        default=False, help_text="Start a conversation with this prompt (when no conversation_id is given)."
    )
    tag = serializers.CharField(max_length=40, required=False, allow_blank=True, default="",
                                help_text="Echoed back in every frame of this generation.")
    purpose = serializers.ChoiceField(
        choices=["chat", "calibrate"], default="chat",
        help_text="calibrate: an answer of a CALIBRATE round, logged as such (never part of a conversation).",
    )


def error_message(errors) -> str:
    """DRF's nested error dict as one readable line: 'prompt: This field is required.; …'."""
    if isinstance(errors, dict):
        return "; ".join(f"{key}: {error_message(value)}" if key != "non_field_errors" else error_message(value)
                         for key, value in errors.items())
    if isinstance(errors, list):
        return " ".join(error_message(e) for e in errors)
    return str(errors)
