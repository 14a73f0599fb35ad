"""/v1/: the OpenAI-compatible chat completions and model list (thin: the protocol lives in
steering.chat.openai.protocol, the work in steering.chat.openai.completions).

Bearer tokens are the tokens of /api/auth/token/; throttles are the chat view's own classes
and scope, so a user's budget is one budget whichever door they come through. Every error,
DRF's own included (401, 429), is answered in OpenAI's shape, which the SDKs turn into their
exception classes."""

from __future__ import annotations

import json

from adrf.views import APIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from steering.api import openai_schema
from steering.api.authentication import StrictTokenAuthentication
from steering.chat.openai import completions
from steering.chat.openai import protocol as p
from steering.chat.turn import ChatBudget


class BearerAuthentication(StrictTokenAuthentication):
    """The API's tokens, presented as OpenAI clients do: `Authorization: Bearer <token>`."""

    keyword = "Bearer"


def openai_error_response(exc: p.OpenAIError) -> JsonResponse:
    response = JsonResponse(exc.body(), status=exc.status)
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _drf_error(exc: Exception, context) -> JsonResponse | None:
    """DRF's exceptions (authentication, throttling, parsing) in OpenAI's shape."""
    if not isinstance(exc, exceptions.APIException):
        return None
    status = exc.status_code
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        status, code = 401, "invalid_api_key"
    elif isinstance(exc, exceptions.Throttled):
        code = "rate_limit_exceeded"
    else:
        code = exc.default_code
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    wait = getattr(exc, "wait", None)
    response = openai_error_response(p.OpenAIError(str(detail), status=status, code=code,
                                                   retry_after=int(wait + 0.999) if wait else None))
    if getattr(exc, "auth_header", None):  # set by DRF from the first authentication class
        response["WWW-Authenticate"] = exc.auth_header
    return response


class OpenAIView(APIView):
    authentication_classes = [BearerAuthentication, *APIView.authentication_classes]
    parser_classes = [JSONParser]

    def get_exception_handler(self):
        return _drf_error


class ChatCompletionsView(ChatBudget, OpenAIView):
    @openai_schema.completions_schema
    async def post(self, request):
        try:
            raw = request.body
        except RequestDataTooBig:
            # Django's own answer to this is an HTML 400, which OpenAI's clients cannot read.
            return openai_error_response(p.OpenAIError(
                f"The request body is over this server's {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", status=413,
                code="request_too_large"))
        try:
            body = p.load_body(raw)
            parsed = p.parse_request(
                body, max_prompt_chars=settings.STEERLAB_MAX_PROMPT_CHARS, max_messages=settings.STEERLAB_MAX_MESSAGES,
                max_new_tokens=settings.STEERLAB_MAX_NEW_TOKENS, default_new_tokens=settings.STEERLAB_DEFAULT_NEW_TOKENS,
            )
            completion = completions.Completion(user=request.user, request=parsed)
            await completion.start()
            if not parsed.stream:
                return JsonResponse(await completion.result())
        except p.OpenAIError as exc:
            return openai_error_response(exc)
        response = StreamingHttpResponse(_sse(completion.chunks()), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # a proxy in front must pass each event on at once
        return response


async def _sse(chunks):
    async for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
        if "error" in chunk:
            return
    yield b"data: [DONE]\n\n"


class ModelsView(OpenAIView):
    @openai_schema.models_schema
    async def get(self, request):
        entries = await sync_to_async(completions.model_ids, thread_sensitive=False)(user=request.user)
        data = []
        for model_id, vector_set in entries:
            if vector_set is None:
                data.append(p.model_entry(model_id, created=0, owned_by="steerlab"))
            else:
                data.append(p.model_entry(
                    model_id, created=int(vector_set.created_at.timestamp()),
                    owned_by="steerlab" if vector_set.owner_id is None else "you",
                    steering={"vector_set": vector_set.pk, "dimensions": [d.name for d in vector_set.dimensions.all()]},
                ))
        return JsonResponse({"object": "list", "data": data})
