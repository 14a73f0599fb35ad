"""Chat's writes: conversations (started, titled by their first answer, renamed, deleted)
and the interaction log with a conversation's messages. A turn is resolved, run and logged
by steering/chat/turn.py (`ChatTurn`), which calls `interaction_record`."""

from __future__ import annotations

import re

from django.db import transaction

from steering.models import Conversation, InteractionLog, Message, VectorSet


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
