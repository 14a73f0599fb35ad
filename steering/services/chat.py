"""Chat: resolve a request (profile, overrides, vector set, history fitted to the model's
context, the prompt-with-steering instruction) and log what was generated (interactions,
conversations and their messages). The turn itself, streamed, is steering/chat/turn.py."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from steering import selectors

from steering.data import catalog
from steering.engine import GenerationParams
from steering.models import Conversation, InteractionLog, Message, VectorSet, clean_preferences
from steering.serving import runtime


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


def chat_prepare(
    *,
    user,
    prompt: str,
    preferences: dict | None,
    vector_set_id: int | None,
    params: dict,
    conversation_id: int | None = None,
    history: list[dict] | None = None,
    vector_set: VectorSet | None = None,
) -> ChatPlan:
    """Resolve a chat request (`vector_set`: the set the caller read already, visible to
    `user`, instead of reading `vector_set_id` again). The user's profile on the vector set, overridden dimension by
    dimension by `preferences`, gives the strengths. Raises LookupError for a vector set or
    conversation the user cannot see, ValueError for anything else wrong, with a message."""

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
    system = steering_prompt(vector_set=vector_set, strengths=strengths) if vector_set.prompt_with_steering else None
    prompt_ids = chat_fit_context(
        history=history, prompt=prompt, max_new_tokens=generation.max_new_tokens, loaded=runtime.site_tokenizer(),
        system=system,
    )
    return ChatPlan(vector_set, strengths, params, generation, prompt_ids, conversation)


def chat_context_tokens(loaded=None) -> int:
    """The served model's context in tokens (what its position embeddings cover)."""
    return (loaded or runtime.site_tokenizer()).context_tokens


def chat_fit_context(
    *, history: list[dict], prompt: str, max_new_tokens: int, loaded, system: str | None = None
) -> list[int]:
    """The prompt's token ids with as much of `history` (oldest first) as fits the model's
    context beside `max_new_tokens`: whole turns are dropped, oldest first, so that the model
    never sees an answer without its question. Raises ValueError with the numbers when even
    the prompt alone does not fit. Counted in the served model's own tokens, chat template
    included, because characters say little about tokens (one emoji can be several). `system`
    is the prompt-with-steering instruction, kept whatever is trimmed. `loaded`: the site
    model or its tokenizer alone (runtime.site_tokenizer)."""
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
    # each of about as many turns as the context holds, however long the list is. Dropping one
    # turn at a time and re-rendering the rest made a list of n empty messages cost n renders
    # of up to n turns (issue 23: 3000 messages, 75 s of CPU).
    starts = [0, *(i for i in range(1, len(history)) if history[i]["role"] == "user")] if history else []

    def render(index: int) -> list[int]:
        return loaded.chat_ids([*framing, *history[starts[index]:], question], system=system)

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
        return alone
    while kept - refused > 1:
        middle = (kept + refused) // 2
        ids = render(middle)
        if len(ids) <= room:
            kept, kept_ids = middle, ids
        else:
            refused = middle
    return kept_ids


def steering_prompt(*, vector_set: VectorSet, strengths: dict[str, float]) -> str | None:
    """The system prompt of a "prompt with steering" vector set for one request: `strengths`
    (that request's, from its own user's profile and overrides) in words. It lives only in
    that request's token ids: no conversation, log or other request ever holds it."""
    from steering.engine.prompting import preferences_instruction

    ends = []
    for dimension in vector_set.dimensions.filter(name__in=list(strengths)).order_by("name"):
        try:
            spec = catalog.dimension(dimension.name)
        except KeyError:
            spec = {}
        ends.append((
            spec.get("prompt_positive") or dimension.positive_label,
            spec.get("prompt_negative") or dimension.negative_label,
            strengths[dimension.name],
        ))
    return preferences_instruction(ends)


TITLE_CHARS = 60
# An answer's opening words that say nothing about its topic.
_FILLER = re.compile(
    r"^(?:(?:sure|certainly|of course|absolutely|great question|good question|okay|ok|yes|hello|hi)\b[!,.:]*\s*)+"
    r"|^(?:here(?:'s| is| are)(?: (?:a|an|some|the|my|few))*\s*)",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"[*_`#>\[\]]+|\(https?://\S+\)")


def _short(text: str, limit: int = TITLE_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:-") + "…"


def conversation_title(*, prompt: str, answer: str) -> str:
    """A short title that tells conversations apart: the first answer's topic (its first heading
    or bold phrase, else its first sentence past "Sure! Here are…"), since many chats open with
    the same question; the prompt when the answer has no words of its own."""
    emphasis = re.search(r"^#{1,6}\s+(.+)$|\*\*(.+?)\*\*", answer, re.MULTILINE)
    if emphasis:
        topic = emphasis.group(1) or emphasis.group(2)
    else:
        sentences = [s for s in re.split(r"(?<=[.!?:])\s+|\n+", _MARKUP.sub("", answer)) if s.strip()]
        topic = ""
        for sentence in sentences:
            topic = _FILLER.sub("", sentence.strip()).strip(" .!:")
            if len(topic) >= 12:
                break
    topic = _MARKUP.sub("", topic).strip(" .!:")
    if len(topic) < 3:
        topic = prompt
    return _short(topic[:1].upper() + topic[1:]) or "Conversation"


def conversation_start(*, user, first_prompt: str, vector_set: VectorSet | None) -> Conversation:
    """A new conversation, titled by its prompt until its first answer names it."""
    return Conversation.objects.create(user=user, title=_short(first_prompt), vector_set=vector_set)


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())
    if not title:
        raise ValueError("A title needs at least one character that is not a space.")
    conversation.title = title[:200]
    conversation.titled = True
    conversation.save(update_fields=["title", "titled", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> int:
    """Delete a conversation and its messages, and blank the prompt and answer text of its
    logged interactions, so that no copy of what was said stays behind. The log rows stay,
    without text (steering, tokens, timings, status), for usage figures. Returns how many logs
    were blanked."""
    with transaction.atomic():
        blanked = InteractionLog.objects.filter(conversation=conversation).update(prompt="", response="")
        conversation.delete()
    return blanked


def interaction_record(
    *,
    user,
    prompt: str,
    response: str,
    status: str,
    vector_set: VectorSet | None,
    strengths: dict[str, float],
    params: dict,
    tokens: int,
    latency_ms: int,
    first_token_ms: int | None = None,
    error: str = "",
    source: str = InteractionLog.Source.API,
    session_id: str = "",
    conversation: Conversation | None = None,
    served_by: list[dict] | None = None,
    readout: dict | None = None,
) -> InteractionLog:
    """Log one generation and, inside a conversation, append its two messages, together."""
    # A model can emit a NUL character (any byte is a token), which PostgreSQL's text columns
    # refuse: the log would fail and take the answer's record with it.
    response = response.replace("\x00", "\ufffd")
    with transaction.atomic():
        log_entry = InteractionLog.objects.create(
            user=user,
            prompt=prompt,
            response=response,
            status=status,
            vector_set=vector_set,
            strengths=strengths,
            params=params,
            tokens=tokens,
            latency_ms=latency_ms,
            first_token_ms=first_token_ms,
            error=error[:2000],
            served_by=served_by or [],
            readout=readout,
            source=source,
            session_id=session_id,
            conversation=conversation,
        )
        if conversation is not None:
            Message.objects.create(conversation=conversation, role=Message.Role.USER, content=prompt)
            if response or status == InteractionLog.Status.OK:
                Message.objects.create(
                    conversation=conversation, role=Message.Role.ASSISTANT, content=response, interaction=log_entry
                )
            fields = ["updated_at"]
            if status == InteractionLog.Status.OK and response.strip() and not conversation.titled:
                # The first whole answer names the conversation; a user's own title stays.
                conversation.title, conversation.titled = conversation_title(prompt=prompt, answer=response), True
                fields += ["title", "titled"]
            conversation.save(update_fields=fields)
    return log_entry
