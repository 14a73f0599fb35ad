"""One chat turn, behind every door (the websocket, POST /api/chat/, /v1): resolve the request
(`chat_prepare`: profile, overrides, vector set, history fitted to the model's context, the
prompt-with-steering instruction), generate it on the inference backend while streaming, and
log it (the rows: steering/services/chat.py). The turn owns what happens when it runs, is
refused, fails or is cancelled; the doors only translate to and from their protocol.

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
import itertools
import time
from dataclasses import dataclass
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from ops.throttling import UserBudgetThrottle
from steering import selectors
from steering.engine import GenerationParams
from steering.engine.prompting import WordedPrompt, preferences_instruction
from steering.files import VectorSetUnavailable
from steering.models import Conversation, InteractionLog, VectorSet, clean_preferences
from steering.services import chat
from steering.serving import runtime
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


HISTORY_MESSAGES = 6  # earlier turns of a conversation given to the model as context


@dataclass
class ChatPlan:
    """Everything a chat generation needs, resolved before it is queued: the strengths the
    user's profile and overrides amount to, and the tokenised prompt. The steering tensors are
    made by whichever process runs the model (GenerationSpec.to_request), not here."""

    vector_set: VectorSet
    strengths: dict[str, float]
    params: dict  # what the request set, as logged
    generation: GenerationParams  # those, checked, over the engine's defaults
    prompt_ids: list[int]
    conversation: Conversation | None
    # The dimensions also said in words where they apply (VectorSet.worded_dimensions); then
    # `prompt_ids` are without words.
    worded: WordedPrompt | None = None


def chat_prepare(
    *, user, prompt: str, preferences: dict | None, vector_set_id: int | None, params: dict,
    conversation_id: int | None = None, history: list[dict] | None = None, vector_set: VectorSet | None = None,
) -> ChatPlan:
    """Resolve a chat request (`vector_set`: the set the caller read already, visible to
    `user`, instead of reading `vector_set_id` again). The user's profile on the vector set,
    overridden dimension by dimension by `preferences`, gives the strengths. Raises LookupError
    for a vector set or conversation the user cannot see, ValueError for anything else wrong."""
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("The prompt is empty")
    conversation = None
    if conversation_id is not None:
        conversation = selectors.conversations_for(user=user).filter(pk=conversation_id).first()
        if conversation is None:
            raise LookupError(f"Conversation {conversation_id} not found")
        # The set the user chose wins (it is the one their sliders show); else the one the
        # conversation started with, though the site default has changed since.
        if vector_set_id is None and conversation.vector_set_id is not None:
            chosen = selectors.vector_set_chosen(user=user)
            vector_set_id = chosen.pk if chosen else conversation.vector_set_id
    if vector_set is not None and conversation is None:
        vector_set = selectors.vector_set_usable(vector_set)
    else:
        vector_set = selectors.vector_set_for_chat(user=user, vector_set_id=vector_set_id)
    strengths = selectors.profile_strengths(user=user, vector_set=vector_set)
    strengths.update(clean_preferences(vector_set, preferences or {}))
    strengths = {name: value for name, value in strengths.items() if value != 0.0}
    generation = GenerationParams(**params)  # bad parameters fail here, with a message, before queueing
    # Earlier turns: the stored conversation's newest, or those the client sent itself (/v1).
    # Both are bounded by STEERLAB_MAX_MESSAGES: fitting them to the context renders the chat
    # template, and a conversation may have grown to any length.
    cap = settings.STEERLAB_MAX_MESSAGES
    if history is not None and len(history) + 1 > cap:
        raise ValueError(f"{len(history) + 1} messages, more than this server's {cap}")
    history = [{"role": m["role"], "content": m["content"]} for m in history or []]
    if conversation is not None:
        newest = min(HISTORY_MESSAGES, cap - 1)
        earlier = list(conversation.messages.order_by("-created_at", "-pk")[:newest])[::-1]
        history = [{"role": m.role, "content": m.content} for m in earlier if m.content]
    loaded = runtime.site_tokenizer()
    fit = {"history": history, "prompt": prompt, "max_new_tokens": generation.max_new_tokens, "loaded": loaded}
    if vector_set.prompt_with_steering:  # every dimension in words, on every turn
        system = steering_prompt(vector_set=vector_set, strengths=strengths)
        return ChatPlan(vector_set, strengths, params, generation, chat_fit_context(**fit, system=system), conversation)
    ends = preference_ends(vector_set, strengths, vector_set.worded_dimensions) if vector_set.worded_dimensions else {}
    if not ends:
        return ChatPlan(vector_set, strengths, params, generation, chat_fit_context(**fit), conversation)
    # Gated: fitted with every word, so that whichever apply, the prompt fits; the ids are the
    # prompt without words, on which the engine reads the conditions before wording it.
    messages, ids = chat_fit_messages(**fit, system=preferences_instruction(list(ends.values())))
    worded = WordedPrompt(messages, ends, tokens=len(ids))
    return ChatPlan(vector_set, strengths, params, generation, loaded.chat_ids(messages), conversation, worded)


def chat_context_tokens(loaded=None) -> int:
    """The served model's context in tokens (what its position embeddings cover)."""
    return (loaded or runtime.site_tokenizer()).context_tokens


def chat_fit_context(
    *, history: list[dict], prompt: str, max_new_tokens: int, loaded, system: str | None = None
) -> list[int]:
    """The prompt's token ids, fitted: see `chat_fit_messages`."""
    return chat_fit_messages(history=history, prompt=prompt, max_new_tokens=max_new_tokens, loaded=loaded,
                             system=system)[1]


def chat_fit_messages(
    *, history: list[dict], prompt: str, max_new_tokens: int, loaded, system: str | None = None
) -> tuple[list[dict], list[int]]:
    """The prompt's token ids with as much of `history` (oldest first) as fits the model's
    context beside `max_new_tokens`: whole turns are dropped, oldest first, so that the model
    never sees an answer without its question. Raises ValueError with the numbers when even
    the prompt alone does not fit. Counted in the served model's own tokens, chat template
    included, because characters say little about tokens (one emoji can be several). `system`
    is the prompt-with-steering instruction, kept whatever is trimmed. `loaded`: the site
    model or its tokenizer alone (runtime.site_tokenizer). Returns the messages kept (without
    `system`) and their ids (with it)."""
    context = chat_context_tokens(loaded)
    room = context - max_new_tokens
    question = {"role": "user", "content": prompt}
    # A /v1 caller's leading system turns frame every answer: trimming drops chat turns only.
    framing = list(itertools.takewhile(lambda message: message["role"] == "system", history))
    history = history[len(framing):]
    alone = loaded.chat_ids([*framing, question], system=system)
    if len(alone) > room:
        raise ValueError(
            f"The prompt is {len(alone)} tokens and max_new_tokens is {max_new_tokens}: {len(alone) + max_new_tokens} "
            f"tokens, more than the model's context of {context} tokens. Shorten the prompt or ask for fewer new tokens."
        )
    # Where the kept turns may start: the whole history, else at a user turn. Which start
    # fits is monotone (more turns, more tokens), so the oldest start that fits is found by
    # galloping back from the newest turn and then bisecting: about 2·log2(turns) renders,
    # each of about as many turns as the context holds, however long the list is (dropping one
    # turn at a time cost n renders of up to n turns: 3000 empty messages, 75 s of CPU).
    starts = [0, *(i for i in range(1, len(history)) if history[i]["role"] == "user")] if history else []

    def messages(index: int | None) -> list[dict]:
        return [*framing, *(history[starts[index]:] if index is not None else []), question]

    def render(index: int) -> list[int]:
        return loaded.chat_ids(messages(index), system=system)

    kept, kept_ids, refused = None, alone, -1  # oldest start known to fit, its ids; newest known not to
    probe, step = len(starts) - 1, 1
    while probe >= 0:
        ids = render(probe)
        if len(ids) > room:
            refused = probe
            break
        kept, kept_ids = probe, ids
        if probe == 0:
            break
        probe, step = max(0, probe - step), step * 2
    if kept is None:
        return messages(None), alone
    while kept - refused > 1:
        middle = (kept + refused) // 2
        ids = render(middle)
        if len(ids) <= room:
            kept, kept_ids = middle, ids
        else:
            refused = middle
    return messages(kept), kept_ids


def steering_prompt(*, vector_set: VectorSet, strengths: dict[str, float]) -> str | None:
    """The system prompt of a "prompt with steering" vector set for one request: `strengths`
    (that request's, from its own user's profile and overrides) in words. It lives only in
    that request's token ids: no conversation, log or other request ever holds it."""
    return preferences_instruction(list(preference_ends(vector_set, strengths).values()))


def preference_ends(vector_set: VectorSet, strengths: dict[str, float], names=None) -> dict[str, tuple[str, str, float]]:
    """{dimension: (positive end, negative end) in words and the strength} for the dimensions
    of `strengths` (those in `names`, when given), by name."""
    chosen = list(strengths) if names is None else [name for name in strengths if name in names]
    return {dimension.name: (*dimension.words(), strengths[dimension.name])
            for dimension in vector_set.dimensions.filter(name__in=chosen).order_by("name")}


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
        self.plan: ChatPlan | None = None
        self.text = ""
        self.finish_reason = "error"
        self.tokens = 0
        # The prompt's length as served, with the words said (the engine's; None until it says).
        self.prompt_tokens: int | None = None
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

    def _prepare(self) -> ChatPlan:
        plan = chat_prepare(
            user=self.user, prompt=self.prompt, preferences=self.preferences, vector_set_id=self.vector_set_id,
            params=self.params, conversation_id=self.conversation_id, history=self.history, vector_set=self.vector_set,
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
            worded=self.plan.worded,
        )
        self._started = time.monotonic()
        async with contextlib.aclosing(backend().generate(spec, self._cancelled)) as events:
            async for event in events:
                if event["type"] == "token":
                    self.text += event["text"]
                    yield event["text"]
                elif event["type"] == "done":
                    self.finish_reason, self.tokens = event["finish"], event["tokens"]
                    self.prompt_tokens = event.get("prompt_tokens")
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
        plan = self.plan
        log_entry = await sync_to_async(chat.interaction_record, thread_sensitive=False)(
            user=self.user, prompt=self.prompt, response=self.text, status=status,
            vector_set=plan.vector_set if plan else None, conversation=plan.conversation if plan else None,
            strengths=self.strengths, params=self.params, tokens=self.tokens, latency_ms=latency_ms,
            first_token_ms=self.first_token_ms, error=self.error, source=self.source, session_id=self.session_id,
            served_by=self.served_by, readout=self.readout,
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
