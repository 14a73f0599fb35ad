"""SteerLab's own chat protocol (docs/api.md), one schema over two transports, each a door that
only translates it to a `ChatTurn` and back:

- POST /api/chat/ (`ChatView`): one answer, whole. An async view, so that waiting for the
  answer holds no thread: concurrent REST chats then join the same decode batches as
  websocket ones instead of queueing behind Django's single thread for sync views.
- /ws/chat/ (`ChatConsumer`): answers streamed token by token, several at a time, each
  cancellable. Its {"type": "generate"} frame is the REST request plus the conversation; a
  bad frame gets an error frame and the socket stays open.

The schema: the request's fields, their bounds (the engine's `LIMITS`) and defaults, which of
them become generation parameters, the turn they ask for, and the response's shape."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from adrf.views import APIView
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from ops.throttling import too_many_message, user_budget_take
from steering.chat.turn import ChatBudget, ChatError, ChatTurn
from steering.engine import CHAT_DEFAULTS, LIMITS, MAX_DIMENSIONS, STRENGTH, strength_check
from steering.models import InteractionLog

log = logging.getLogger(__name__)


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


class ReadoutSerializer(serializers.Serializer):
    dimensions = serializers.ListField(child=serializers.CharField())
    mean = serializers.DictField(child=serializers.FloatField(allow_null=True),
                                 help_text="Per dimension, the mean over the answer's tokens.")
    tokens = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                   help_text="Per token, one value per dimension (in `dimensions` order).")


class ChatResponseSerializer(serializers.Serializer):
    generated_text = serializers.CharField()
    preferences_applied = serializers.DictField(child=serializers.FloatField())
    tokens = serializers.IntegerField()
    latency_ms = serializers.IntegerField()
    interaction_id = serializers.IntegerField()
    finish_reason = serializers.CharField()
    vector_set = serializers.IntegerField()
    conditions = serializers.DictField(
        allow_null=True,
        help_text="Conditional steering: for each topical dimension asked for, whether it applied to this turn "
        "{applied, score, threshold}; null when no topical dimension was gated.",
    )
    readout = ReadoutSerializer(
        allow_null=True,
        help_text="How the answer reads on each dimension of the vector set, as the model represents it "
        "(−1 and +1: the dimension's reference ends); null when the vector set has no readout.",
    )


class ChatErrorSerializer(serializers.Serializer):
    """The body a refused or failed turn is answered with (`ChatError`)."""

    detail = serializers.CharField()
    code = serializers.CharField()


class ChatView(ChatBudget, APIView):
    @extend_schema(
        request=ChatRequestSerializer,
        # 400 is either a message per field (the request's shape) or {detail, code} (its
        # content, e.g. an unknown dimension): an object either way.
        responses={200: ChatResponseSerializer,
                   400: OpenApiResponse(OpenApiTypes.OBJECT, description="A message per field, or detail and code."),
                   404: ChatErrorSerializer,
                   # 422: the request's own steering broke its generation (logits not finite).
                   422: ChatErrorSerializer,
                   429: ChatErrorSerializer, 503: ChatErrorSerializer},
    )
    async def post(self, request):
        """Generate an answer steered by your profile, overridden by `preferences`."""
        form = ChatRequestSerializer(data=request.data)
        await sync_to_async(form.is_valid)(raise_exception=True)
        data = form.validated_data
        turn = chat_turn(data, user=request.user, source=InteractionLog.Source.API)
        try:
            await turn.prepare()
            result = await turn.complete()
        except ChatError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return Response({"detail": exc.message, "code": exc.code}, status=exc.http_status, headers=headers)
        return Response(ChatResponseSerializer(result).data)


MAX_FRAME_CHARS = 64 * 1024
# What daphne is told to accept (--websocket-max-message-size and --websocket-max-frame-size on
# every command line that starts it): the longest frame above at four UTF-8 bytes a character.
# Anything larger is cut off by daphne before it is buffered, not read whole and refused here.
MAX_FRAME_BYTES = 4 * MAX_FRAME_CHARS


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # the browser sees "unauthorised", not a generic drop
            return
        self.user = user
        self.turns: dict[str, tuple[ChatTurn, asyncio.Task]] = {}
        self.open = True
        await self.accept()

    async def disconnect(self, code):
        self.open = False
        turns = getattr(self, "turns", {})
        for turn, _ in turns.values():
            turn.cancel()
        if turns:
            # Let each turn log itself as cancelled; a row is freed within one decode step.
            await asyncio.wait([task for _, task in turns.values()], timeout=10)

    async def send_json(self, frame: dict) -> None:
        if self.open:
            await self.send(text_data=json.dumps(frame))

    async def error(self, code: str, message: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.error("bad_frame", "Send JSON text frames, not binary ones.")
        if len(text_data) > MAX_FRAME_CHARS:
            return await self.error("bad_frame", f"Frames are limited to {MAX_FRAME_CHARS} characters.")
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            return await self.error("bad_json", "The frame is not valid JSON.")
        if not isinstance(message, dict):
            return await self.error("bad_frame", 'A frame is a JSON object with a "type".')
        kind = message.get("type")
        if kind == "generate":
            await self.generate(message)
        elif kind == "cancel":
            await self.cancel(message.get("request_id"))
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.error("unknown_type", f"Unknown frame type {str(kind)[:40]!r}; use generate, cancel or ping.")

    async def generate(self, message: dict) -> None:
        form = GenerateFrameSerializer(data=message)
        if not form.is_valid():
            return await self.error("invalid", error_message(form.errors), tag=str(message.get("tag", ""))[:40])
        data = form.validated_data
        # The same budget as REST chat, spent before anything is logged or queued.
        wait = await sync_to_async(user_budget_take)(scope=ChatBudget.throttle_scope, user=self.user)
        if wait:
            return await self.error("too_many", too_many_message(wait, "requests"), retry_after=wait, tag=data["tag"])
        if len(self.turns) >= settings.STEERLAB_MAX_PER_USER:
            # Every refusal says when to try again, as the scheduler's own per-user one does.
            return await self.error(
                "too_many", "Generations are already running on this socket; wait or cancel one.", retry_after=1,
                tag=data["tag"],
            )
        turn = chat_turn(data, user=self.user, source=InteractionLog.Source.WEBSOCKET)
        request_id = uuid.uuid4().hex[:12]
        task = asyncio.ensure_future(self.run(request_id, data["tag"], turn))
        self.turns[request_id] = (turn, task)
        task.add_done_callback(lambda _: self.turns.pop(request_id, None))

    async def run(self, request_id: str, tag: str, turn: ChatTurn) -> None:
        ids = {"request_id": request_id, "tag": tag}
        try:
            await turn.prepare()
            await self.send_json({"type": "start", **ids, **turn.applied})
            async for text in turn.run():
                await self.send_json({"type": "token", **ids, "text": text})
            result = await turn.finish()
        except ChatError as exc:  # the turn has logged itself, unless it was refused
            await self.error(exc.code, exc.message, retry_after=exc.retry_after, **ids)
        except Exception:
            # Whatever went wrong, the client hears of it: a turn never ends in silence.
            log.exception("Chat turn %s failed", request_id)
            await self.error("internal", "Something went wrong on the server; it has been logged.", **ids)
        else:
            stats = {
                k: result[k]
                for k in ("tokens", "latency_ms", "first_token_ms", "finish_reason", "interaction_id", "conditions")
            }
            await self.send_json({"type": "done", **ids, "text": result["generated_text"], "stats": stats,
                                  "preferences_applied": result["preferences_applied"], "readout": result["readout"]})

    async def cancel(self, request_id) -> None:
        if request_id is not None and not isinstance(request_id, str):
            # Checked first: an unhashable id (a list, an object) would crash the lookup below.
            return await self.error("invalid", "request_id must be a string.")
        if request_id is not None and request_id not in self.turns:
            return await self.error("not_found", f"No running generation {str(request_id)[:40]!r}.")
        for key, (turn, _) in self.turns.items():
            if request_id is None or key == request_id:
                turn.cancel()
