"""/v1/: the OpenAI-compatible chat completions and model list, the door itself. The protocol
(parsing, response shapes) lives in steering.chat.openai.protocol; here an OpenAI request
becomes one `ChatTurn`, the same turn the chat page and /api/chat/ run, so it shares the
inference service's batches, the per-user limits and the interaction log (source "openai");
only the protocol around it differs.

    completion = Completion(user=..., request=parse_request(body, ...))
    await completion.start()          # OpenAIError for anything refused, before any byte is sent
    body = await completion.result()  # non-streaming
    async for chunk in completion.chunks(): …   # streaming: chat.completion.chunk dicts

`start` waits for the first piece of text, so a full queue or a user over their limit is a
real 503 / 429 status even for a stream, not an error hidden inside a 200.

Bearer tokens are the tokens of /api/auth/token/; throttles are the chat view's own classes
and scope, so a user's budget is one budget whichever door they come through. Every error,
DRF's own included (401, 429), is answered in OpenAI's shape, which the SDKs turn into their
exception classes."""

from __future__ import annotations

import json
from typing import AsyncIterator

from adrf.views import APIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Count
from django.http import JsonResponse, StreamingHttpResponse
from django.utils.text import slugify
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from steering import selectors
from steering.api import openai_schema
from steering.api.authentication import StrictTokenAuthentication
from steering.chat.openai import protocol as p
from steering.chat.turn import ChatBudget, ChatError, ChatTurn
from steering.models import InteractionLog, VectorSet, site_model_id


def model_ids(*, user) -> list[tuple[str, VectorSet | None]]:
    """What /v1/models lists for `user`: the served model, then one `steerlab/<set name
    slug>` per ready vector set for it that the user may chat with (its id when slugs repeat)."""
    served = site_model_id()
    sets = list(
        selectors.vector_sets_visible(user=user)
        .filter(status=VectorSet.Status.READY, model_id=served)
        .annotate(n=Count("dimensions"))
        .prefetch_related("dimensions")
        .order_by("-created_at", "-pk")
    )
    # Slugs, since clients put model ids in URLs, configs and command lines: "Default (six
    # dimensions)" is steerlab/default-six-dimensions.
    slugs = [slugify(vs.name) for vs in sets]
    entries: list[tuple[str, VectorSet | None]] = [(served, None)]
    for vs, slug in zip(sets, slugs):
        label = slug if slug and slugs.count(slug) == 1 and not slug.isdigit() else str(vs.pk)
        entries.append((p.MODEL_PREFIX + label, vs))
    return entries


def model_resolve(*, user, model: str, vector_set_id: int | None) -> VectorSet | int | None:
    """The vector set a request's `model` (and `steering.vector_set`) select: the row itself
    for a steerlab/ model (read here, and passed on so that nothing reads it again), else
    `steering.vector_set`'s id, or None (the profile's set, as in the chat page). Raises OpenAIError 404 for a
    model the user cannot use, 400 when `model` and `steering.vector_set` disagree."""
    if model == site_model_id():
        return vector_set_id
    if model.startswith(p.MODEL_PREFIX):
        for entry, vs in model_ids(user=user)[1:]:
            if entry == model:
                if vector_set_id is not None and vector_set_id != vs.pk:
                    raise p.OpenAIError(
                        f"model {model!r} is vector set {vs.pk}, but steering.vector_set is {vector_set_id}",
                        param="steering.vector_set", code="invalid_value",
                    )
                return vs
    # The name is not echoed: a guessed name of another user's set must read like any other.
    raise p.OpenAIError("The model does not exist or you do not have access to it; see GET /v1/models",
                        status=404, param="model", code="model_not_found")


def openai_error(exc: ChatError) -> p.OpenAIError:
    return p.OpenAIError(exc.message, status=exc.http_status, code=exc.openai_code,
                         param="steering" if exc.code == "not_found" else None, retry_after=exc.retry_after)


class Completion:
    def __init__(self, *, user, request: p.CompletionRequest) -> None:
        self.user, self.request = user, request
        self.id, self.created = p.completion_id(), p.now()
        self.turn: ChatTurn | None = None
        self.scanner = p.StopScanner(request.stop)
        self._pieces: AsyncIterator[str] | None = None
        self._first: str | None = None

    @property
    def model(self) -> str:
        return self.request.model

    async def start(self) -> None:
        req = self.request
        resolved = await sync_to_async(model_resolve, thread_sensitive=False)(
            user=self.user, model=req.model, vector_set_id=req.vector_set_id
        )
        vector_set = resolved if isinstance(resolved, VectorSet) else None
        self.turn = ChatTurn(
            user=self.user, prompt=req.prompt, history=req.history, preferences=req.preferences,
            vector_set_id=vector_set.pk if vector_set else resolved, vector_set=vector_set,
            params=req.params, session_id=req.user,
            source=InteractionLog.Source.OPENAI,
        )
        try:
            await self.turn.prepare()
        except ChatError as exc:
            raise openai_error(exc) from exc
        self._pieces = self.turn.run()
        self._first = await self._next()

    async def _next(self) -> str | None:
        """The next piece of text, None at the end (the turn logs a failure itself)."""
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return None
        except ChatError as exc:
            raise openai_error(exc) from exc

    async def _texts(self) -> AsyncIterator[str]:
        """The answer's text in pieces, cut at the first stop sequence. Whoever stops reading
        early (a client that went away) cancels the generation and frees its row."""
        finished = False
        try:
            piece = self._first
            while piece is not None:
                out = self.scanner.push(piece)
                if out:
                    yield out
                if self.scanner.stopped:
                    # The rest is not wanted: free the row now; the generation ends at its
                    # next decode step and the loop drains its last event.
                    self.turn.cut(self.scanner.text)
                piece = await self._next()
            tail = self.scanner.flush()
            if tail:
                yield tail
            finished = True
        finally:
            if not finished:
                await self._pieces.aclose()  # the turn cancels itself and logs as cancelled

    @property
    def finish_reason(self) -> str:
        if self.scanner.stopped:
            return "stop"
        return "length" if self.turn.finish_reason == "length" else "stop"

    def usage(self) -> dict:
        return p.usage(self.turn.prompt_tokens or len(self.turn.plan.prompt_ids), self.turn.tokens)

    def steering(self, logged: dict | None = None) -> dict:
        """The extension field echoing what steered this answer."""
        echo = {"vector_set": self.turn.plan.vector_set.pk, "preferences_applied": self.turn.strengths}
        if logged is not None:
            echo["interaction_id"] = logged["interaction_id"]
            echo["conditions"] = self.turn.conditions
        return echo

    async def result(self) -> dict:
        text = "".join([piece async for piece in self._texts()])
        logged = await self.turn.finish()
        return p.completion(id_=self.id, model=self.model, created=self.created, text=text,
                            finish_reason=self.finish_reason, usage_=self.usage(), steering=self.steering(logged),
                            readout=self.turn.readout)

    async def chunks(self) -> AsyncIterator[dict]:
        """Role first (with the steering echo), content deltas, the finish reason, then the
        usage chunk when asked for. A failure after the first byte becomes an error event."""
        meta = {"id_": self.id, "model": self.model, "created": self.created}
        yield p.chunk(**meta, delta={"role": "assistant", "content": ""}, steering=self.steering())
        try:
            async for piece in self._texts():
                yield p.chunk(**meta, delta={"content": piece})
        except p.OpenAIError as exc:
            yield exc.body()
            return
        logged = await self.turn.finish()
        yield p.chunk(**meta, delta={}, finish_reason=self.finish_reason, steering=self.steering(logged),
                      readout=self.turn.readout)
        if self.request.include_usage:
            yield p.chunk(**meta, delta=None, usage_=self.usage())


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
            completion = Completion(user=request.user, request=parsed)
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
        entries = await sync_to_async(model_ids, thread_sensitive=False)(user=request.user)
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
