"""One chat turn, shared by the REST view and the websocket consumer: resolve the request
(profile, overrides, vector set, prompt), generate it on the inference backend while
streaming, and log it. Views and consumers only translate to and from their protocol.

    turn = ChatTurn(user=..., prompt=..., preferences=..., params=..., source=...)
    await turn.prepare()                 # ChatError for anything the user must fix
    async for text in turn.stream(): …   # ChatError if generation cannot run
    result = await turn.finish()         # logs the interaction, returns the response body
    turn.cancel()                        # from anywhere, any time: frees the row
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from asgiref.sync import sync_to_async

from steering.files import VectorSetUnavailable
from steering.models import InteractionLog
from steering.services import chat
from steering.serving.backends import GenerationSpec, backend

# Error codes → HTTP status for the REST API (the websocket sends the code itself).
HTTP_STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "unprocessable": 422,  # the request's own steering or parameters broke its generation
    "too_many": 429,
    "busy": 503,
    "worker_unavailable": 503,
    "vector_set_unavailable": 503,
    "generation_failed": 500,
    "internal": 500,
}


# Refused before any generation started: nothing to log.
REFUSED = ("busy", "too_many")


class ChatError(Exception):
    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


class ChatTurn:
    def __init__(
        self,
        *,
        user,
        prompt: str,
        preferences: dict | None = None,
        vector_set_id: int | None = None,
        params: dict | None = None,
        history: list[dict] | None = None,
        session_id: str = "",
        conversation_id: int | None = None,
        new_conversation: bool = False,
        source: str = InteractionLog.Source.API,
    ) -> None:
        self.user, self.prompt, self.preferences = user, prompt, preferences or {}
        self.vector_set_id, self.params = vector_set_id, params or {}
        self.history = history or []  # earlier messages sent by the client (/v1), oldest first
        self.session_id, self.conversation_id = session_id, conversation_id
        self.new_conversation, self.source = new_conversation, source
        self.plan: chat.ChatPlan | None = None
        self.text = ""
        self.finish_reason = "error"
        self.tokens = 0
        self.first_token_ms: int | None = None
        self.error = ""
        self.served_by: list[dict] = []  # worker mode: each worker that streamed part of the answer
        self._cancelled = asyncio.Event()
        self._started = 0.0

    async def prepare(self) -> None:
        try:
            self.plan = await sync_to_async(self._prepare, thread_sensitive=False)()
        except LookupError as exc:
            raise ChatError("not_found", str(exc).strip("'\"")) from exc
        except VectorSetUnavailable as exc:
            raise ChatError("vector_set_unavailable", str(exc), 60) from exc
        except ValueError as exc:
            raise ChatError("bad_request", str(exc)) from exc

    def _prepare(self) -> chat.ChatPlan:
        plan = chat.chat_prepare(
            user=self.user,
            prompt=self.prompt,
            preferences=self.preferences,
            vector_set_id=self.vector_set_id,
            params=self.params,
            conversation_id=self.conversation_id,
            history=self.history,
        )
        if plan.conversation is None and self.new_conversation:
            plan.conversation = chat.conversation_start(
                user=self.user, first_prompt=self.prompt, vector_set=plan.vector_set
            )
        return plan

    @property
    def strengths(self) -> dict[str, float]:
        return dict(self.plan.strengths) if self.plan else {}

    def cancel(self) -> None:
        self._cancelled.set()

    async def stream(self) -> AsyncIterator[str]:
        """The answer's text as it is generated. Raises ChatError if it cannot be generated;
        a cancelled turn ends quietly with finish_reason "cancelled"."""
        assert self.plan is not None, "prepare() first"
        spec = GenerationSpec(
            prompt_ids=self.plan.prompt_ids,
            params=self.params,
            vector_set_id=self.plan.vector_set.pk,
            strengths=self.plan.strengths,
            user=str(self.user.pk),
        )
        self._started = time.monotonic()
        async with contextlib.aclosing(backend().generate(spec, self._cancelled)) as events:
            async for event in events:
                if event["type"] == "token":
                    self.text += event["text"]
                    yield event["text"]
                elif event["type"] == "done":
                    self.finish_reason, self.tokens = event["finish"], event["tokens"]
                    self.first_token_ms = event.get("first_token_ms")
                elif event["type"] == "worker":
                    self.served_by.append({"worker": event["worker"], "from_token": event["resumed_at"]})
                elif event["type"] == "error":
                    self.error = event["message"]
                    raise ChatError(event["code"], event["message"], event.get("retry_after"))

    async def finish(self) -> dict:
        """Log the turn (ok, cancelled or failed) and return the response body."""
        latency_ms = round((time.monotonic() - self._started) * 1000) if self._started else 0
        if self.error:
            status = InteractionLog.Status.FAILED
        elif self.finish_reason == "cancelled":
            status = InteractionLog.Status.CANCELLED
        else:
            status = InteractionLog.Status.OK
        log_entry = await sync_to_async(chat.interaction_record, thread_sensitive=False)(
            user=self.user,
            prompt=self.prompt,
            response=self.text,
            status=status,
            vector_set=self.plan.vector_set if self.plan else None,
            strengths=self.strengths,
            params=self.params,
            tokens=self.tokens,
            latency_ms=latency_ms,
            first_token_ms=self.first_token_ms,
            error=self.error,
            source=self.source,
            session_id=self.session_id,
            conversation=self.plan.conversation if self.plan else None,
            served_by=self.served_by,
        )
        return {
            "generated_text": self.text,
            "preferences_applied": self.strengths,
            "tokens": self.tokens,
            "latency_ms": latency_ms,
            "first_token_ms": self.first_token_ms,
            "interaction_id": log_entry.pk,
            "finish_reason": self.finish_reason,
            "vector_set": self.plan.vector_set.pk if self.plan else None,
            "conversation_id": self.plan.conversation.pk if self.plan and self.plan.conversation else None,
        }


async def complete(**kwargs) -> dict:
    """A whole turn at once (REST). A failed generation is logged, then raised."""
    turn = ChatTurn(**kwargs)
    await turn.prepare()
    try:
        async for _ in turn.stream():
            pass
    except ChatError as exc:
        if exc.code not in REFUSED:
            await turn.finish()
        raise
    except asyncio.CancelledError:  # the client went away: free the row, keep the record
        turn.cancel()
        turn.finish_reason = "cancelled"
        await asyncio.shield(turn.finish())
        raise
    return await turn.finish()
