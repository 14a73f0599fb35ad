"""/v1's place in the OpenAPI schema (documentation only: the views parse and answer bodies
themselves, in OpenAI's shape, through steering.chat.openai.protocol). The shapes are OpenAI's chat
completions and models, the subset this server accepts, plus SteerLab's `steering` extension."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from steering.chat.native import ReadoutSerializer

TAG = "OpenAI-compatible (/v1)"

_message = inline_serializer("V1Message", {
    "role": serializers.ChoiceField(choices=["system", "developer", "user", "assistant"]),
    "content": serializers.CharField(help_text="A string, or a list of {type: text, text} parts."),
})
_steering_request = inline_serializer("V1SteeringRequest", {
    "preferences": serializers.DictField(
        child=serializers.FloatField(min_value=-1, max_value=1), required=False,
        help_text="dimension → strength in −1…1, over your profile's strengths for this request only.",
    ),
    "vector_set": serializers.IntegerField(required=False, help_text="A vector set id (default: the model's set)."),
})
_steering_applied = inline_serializer("V1SteeringApplied", {
    "vector_set": serializers.IntegerField(),
    "preferences_applied": serializers.DictField(child=serializers.FloatField()),
})
_error = inline_serializer("V1Error", {
    "error": inline_serializer("V1ErrorBody", {
        "message": serializers.CharField(), "type": serializers.CharField(),
        "param": serializers.CharField(allow_null=True), "code": serializers.CharField(allow_null=True),
    }),
})
_usage = inline_serializer("V1Usage", {
    "prompt_tokens": serializers.IntegerField(), "completion_tokens": serializers.IntegerField(),
    "total_tokens": serializers.IntegerField(),
})

completions_request = inline_serializer("V1ChatCompletionRequest", {
    "model": serializers.CharField(help_text="The served model, or a steerlab/<vector set> id from /v1/models."),
    "messages": _message.__class__(many=True),
    "max_completion_tokens": serializers.IntegerField(required=False, help_text="Or max_tokens."),
    "temperature": serializers.FloatField(required=False, min_value=0, max_value=2, help_text="0 is greedy."),
    "top_p": serializers.FloatField(required=False),
    "seed": serializers.IntegerField(required=False),
    "stop": serializers.ListField(child=serializers.CharField(), required=False),
    "stream": serializers.BooleanField(required=False, help_text="Server-sent events of chat.completion.chunk."),
    "stream_options": inline_serializer("V1StreamOptions", {"include_usage": serializers.BooleanField()}, required=False),
    "user": serializers.CharField(required=False, max_length=100),
    "steering": _steering_request.__class__(required=False, help_text="SteerLab's extension."),
})

completion_response = inline_serializer("V1ChatCompletion", {
    "id": serializers.CharField(),
    "object": serializers.CharField(default="chat.completion"),
    "created": serializers.IntegerField(),
    "model": serializers.CharField(),
    "choices": inline_serializer("V1Choice", {
        "index": serializers.IntegerField(),
        "message": _message.__class__(),
        "finish_reason": serializers.ChoiceField(choices=["stop", "length"]),
    }, many=True),
    "usage": _usage.__class__(),
    "steering": _steering_applied.__class__(help_text="What steered the answer (SteerLab's extension)."),
    "readout": ReadoutSerializer(allow_null=True, help_text="How the answer reads on each dimension, −1…+1 between "
                                 "the reference ends (SteerLab's extension; in a stream, on the last chunk)."),
})

models_response = inline_serializer("V1ModelList", {
    "object": serializers.CharField(default="list"),
    "data": inline_serializer("V1Model", {
        "id": serializers.CharField(), "object": serializers.CharField(default="model"),
        "created": serializers.IntegerField(), "owned_by": serializers.CharField(),
        "steering": inline_serializer("V1ModelSteering", {
            "vector_set": serializers.IntegerField(), "dimensions": serializers.ListField(child=serializers.CharField()),
        }, required=False),
    }, many=True),
})

_errors = {
    400: OpenApiResponse(_error, description="A bad parameter, named in error.param."),
    401: OpenApiResponse(_error, description="No or a wrong bearer token."),
    429: OpenApiResponse(_error, description="Over your budget; Retry-After says when to retry."),
}

completions_schema = extend_schema(
    tags=[TAG],
    summary="Chat completions (OpenAI-compatible), steered by your profile",
    description=(
        "OpenAI's POST /v1/chat/completions: the official SDKs work with base_url=<site>/v1 and an API token "
        "from /api/auth/token/ as the key (`Authorization: Bearer <token>`). Streaming sends "
        "chat.completion.chunk events and `data: [DONE]`. Errors come in OpenAI's shape. "
        "See docs/interop.md for what is supported."
    ),
    request=completions_request,
    responses={200: completion_response, **_errors},
    examples=[OpenApiExample("Steered request", request_only=True, value={
        "model": "steerlab/shared",
        "messages": [{"role": "user", "content": "Suggest a place for dinner."}],
        "max_completion_tokens": 64,
        "steering": {"preferences": {"cost": -0.5}},
    })],
)

models_schema = extend_schema(
    tags=[TAG],
    summary="Models (OpenAI-compatible)",
    description="The served model and one steerlab/<vector set> entry per vector set you can use.",
    responses={200: models_response, 401: _errors[401]},
)


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):
    """/v1's `Authorization: Bearer <token>` (the API's tokens), apart from /api/'s `Token <token>`."""

    target_class = "steering.chat.openai.views.BearerAuthentication"
    name = "bearerAuth"
    priority = 1  # over the TokenAuthentication scheme that matches it as a subclass

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A token from /api/auth/token/, as OpenAI's SDKs send keys."}
