"""One chat turn, behind every door (the websocket, POST /api/chat/, /v1): resolve the request
(profile, overrides, vector set, prompt), generate it on the inference backend while
streaming, and log it. The turn owns what happens when it runs, is refused, fails or is
cancelled; the doors only translate to and from their protocol.

    turn = ChatTurn(user=..., prompt=..., preferences=..., params=..., source=...)
    await turn.prepare()                 # ChatError for anything the user must fix
    async for text in turn.run(): …      # ChatError if generation cannot run (logged unless refused)
    result = await turn.finish()         # logs the interaction once, returns the response body
    turn.cancel()                        # from anywhere, any time: frees the row
    result = await turn.complete()       # run and finish in one (REST)

A turn whose reader stops early (a task cancelled, a stream closed) is cancelled and logged as
such; `cut(text)` ends it at a stop sequence, logged as the complete answer `text`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from asgiref.sync import sync_to_async

from ops.throttling import UserBudgetThrottle
from steering.files import VectorSetUnavailable
from steering.models import InteractionLog
from steering.services import chat
from steering.serving.backends import GenerationSpec, backend

# Every error code a turn raises → (HTTP status, OpenAI's error code): REST answers the status
# with the code itself, /v1 the status with OpenAI's code, the websocket sends the code alone.
ERRORS = {
    "bad_request": (400, "invalid_value"),
    "not_found": (404, "not_found"),
    "unprocessable": (422, "unprocessable"),  # the request's own steering or parameters broke it
    "too_many": (429, "rate_limit_exceeded"),
    "busy": (503, "server_busy"),
    "worker_unavailable": (503, "worker_unavailable"),
    "vector_set_unavailable": (503, "vector_set_unavailable"),
    "generation_failed": (500, "generation_failed"),
    "internal": (500, "internal_error"),
}


class ChatBudget:
    """The user's chat budget, one budget whichever door spends it: the REST and /v1 views take
    these throttles; websocket generate frames and LEARN feedback spend the same scope."""

    throttle_classes = [UserBudgetThrottle]
    throttle_scope = "chat"


# Refused before any generation started: nothing to log.
REFUSED = ("busy", "too_many")


class ChatError(Exception):
    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after

    @property
    def http_status(self) -> int:
        return ERRORS.get(self.code, (500,))[0]

    @property
    def openai_code(self) -> str:
        return ERRORS[self.code][1] if self.code in ERRORS else self.code


class ChatTurn:
    def __init__(
        self,
        *,
        user,
        prompt: str,
        preferences: dict | None = None,
        vector_set_id: int | None = None,
        vector_set=None,
        params: dict | None = None,
        history: list[dict] | None = None,
        session_id: str = "",
        conversation_id: int | None = None,
        new_conversation: bool = False,
        source: str = InteractionLog.Source.API,
    ) -> None:
        self.user, self.prompt, self.preferences = user, prompt, preferences or {}
        self.vector_set_id, self.params = vector_set_id, params or {}
        self.vector_set = vector_set  # a VectorSet the door read already (/v1's model names one)
        self.history = history or []  # earlier messages sent by the client (/v1), oldest first
        self.session_id, self.conversation_id = session_id, conversation_id
        self.new_conversation, self.source = new_conversation, source
        self.plan: chat.ChatPlan | None = None
        self.text = ""
        self.finish_reason = "error"
        self.tokens = 0
        self.first_token_ms: int | None = None
        self.conditions: dict | None = None  # the topical dimensions' decisions (conditional steering)
        self.readout: dict | None = None  # how the answer read per dimension (engine/readout.py)
        self.error = ""
        self.served_by: list[dict] = []  # worker mode: each worker that streamed part of the answer
        self._cancelled = asyncio.Event()
        self._started = 0.0
        self._cut: str | None = None
        self._logged: dict | None = None

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
            vector_set=self.vector_set,
        )
        if plan.conversation is None and self.new_conversation:
            plan.conversation = chat.conversation_start(
                user=self.user, first_prompt=self.prompt, vector_set=plan.vector_set
            )
        return plan

    @property
    def strengths(self) -> dict[str, float]:
        return dict(self.plan.strengths) if self.plan else {}

    @property
    def applied(self) -> dict:
        """What the turn was resolved to, as the doors report it when it starts and ends: the
        strengths, the vector set and the conversation."""
        plan = self.plan
        return {
            "preferences_applied": self.strengths,
            "vector_set": plan.vector_set.pk if plan else None,
            "conversation_id": plan.conversation.pk if plan and plan.conversation else None,
        }

    def cancel(self) -> None:
        self._cancelled.set()

    def cut(self, text: str) -> None:
        """End the answer here (a stop sequence was reached): the row is freed, and the turn
        is logged as the complete answer `text`, finish reason "stop"."""
        self._cut = text
        self.cancel()

    async def run(self) -> AsyncIterator[str]:
        """The answer's text as it is generated. A failure raises ChatError, logged first
        unless the turn was refused before it started (busy, over a limit); a reader that
        stops early (its task cancelled, this iterator closed) cancels the turn and logs it."""
        try:
            async with contextlib.aclosing(self._stream()) as texts:
                async for text in texts:
                    yield text
        except ChatError as exc:
            if exc.code not in REFUSED:
                await self.finish()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self.cancel()
            self.finish_reason = "cancelled"
            await asyncio.shield(self.finish())  # the record is kept even as the reader goes
            raise

    async def complete(self) -> dict:
        """The whole turn at once (REST): run it to its end and return the logged body."""
        async for _ in self.run():
            pass
        return await self.finish()

    async def _stream(self) -> AsyncIterator[str]:
        """The answer's text as it is generated. Raises ChatError if it cannot be generated;
        a cancelled turn ends quietly with finish_reason "cancelled"."""
        assert self.plan is not None, "prepare() first"
        spec = GenerationSpec(
            prompt_ids=self.plan.prompt_ids,
            params=self.plan.generation,
            vector_set_id=self.plan.vector_set.pk,
            vector_set=self.plan.vector_set,
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
                    self.conditions = event.get("conditions")
                    self.readout = event.get("readout")
                elif event["type"] == "worker":
                    self.served_by.append({"worker": event["worker"], "from_token": event["resumed_at"]})
                elif event["type"] == "error":
                    self.error = event["message"]
                    raise ChatError(event["code"], event["message"], event.get("retry_after"))

    async def finish(self) -> dict:
        """Log the turn (ok, cancelled or failed) and return the response body; once, however
        often it is called."""
        if self._logged is None:
            self._logged = await self._log()
        return self._logged

    async def _log(self) -> dict:
        if self._cut is not None:  # cut at a stop sequence: a complete answer, not a cancelled one
            self.text, self.finish_reason = self._cut, "stop"
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
            readout=self.readout,
        )
        return {
            "generated_text": self.text,
            **self.applied,
            "tokens": self.tokens,
            "latency_ms": latency_ms,
            "first_token_ms": self.first_token_ms,
            "interaction_id": log_entry.pk,
            "finish_reason": self.finish_reason,
            "conditions": self.conditions,
            "readout": self.readout,
        }
