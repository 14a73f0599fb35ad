"""The chat and profile pages. Thin: they read through selectors and render; every write goes
through the REST API (sliders) or the websocket (chat), which the page's JavaScript calls."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie

from steering import selectors
from steering.models import InteractionLog, PreferenceProfile

HISTORY_LIMIT = 50
MODE_HELP = {
    PreferenceProfile.Mode.SELECT: "you set the sliders",
    PreferenceProfile.Mode.CALIBRATE: "set by comparing answers",
    PreferenceProfile.Mode.LEARN: "your feedback on answers moves them",
}
INTERACTIONS_LIMIT = 50


def steering_label(strengths: dict, labels: dict[str, tuple[str, str]]) -> str:
    """How the steering of one answer reads under it: "80 % Formal · 35 % Budget", or
    "unsteered" when every strength was 0."""
    parts = [
        selectors.strength_summary(value, *labels.get(name, (f"−{name}", f"+{name}")))
        for name, value in sorted(strengths.items())
        if value
    ]
    return " · ".join(parts) or "unsteered"


def readout_label(readout: dict | None) -> str:
    """How an answer read, in one line: "formality +0.62 · cost −0.30" (−1 and +1: the
    dimension's reference ends), or "" without a readout."""
    means = (readout or {}).get("mean") or {}
    # In the set's order (the readout's `dimensions` list): PostgreSQL's jsonb does not keep the
    # order of an object's keys.
    order = [name for name in (readout or {}).get("dimensions") or [] if name in means]
    order += [name for name in means if name not in order]
    sign = lambda value: "+" if value > 0 else "−" if value < 0 else ""
    parts = [f"{name} {sign(means[name])}{abs(means[name]):.2f}" for name in order
             if isinstance(means[name], (int, float))]
    return " · ".join(parts)


def _profile(user):
    """The user's profile on the vector set they chat with (their choice, else the site
    default), or None when no set is ready."""
    vector_set = selectors.vector_set_for_user(user=user)
    if vector_set is None:
        return None, None
    return vector_set, selectors.profile_summary(user=user, vector_set=vector_set)


def _choosable(user) -> list:
    """The sets the page's selector offers: the ones the user may chat with, by name."""
    return list(selectors.vector_sets_choosable(user=user).order_by("name", "pk"))


@login_required
@ensure_csrf_cookie  # the sliders' PATCH reads the csrftoken cookie
def chat(request, conversation_id: int | None = None):
    conversations = selectors.conversations_for(user=request.user)
    conversation = None
    if conversation_id is not None:
        # Another user's conversation is simply not found.
        conversation = get_object_or_404(conversations, pk=conversation_id)
    vector_set, profile = _profile(request.user)
    labels = _labels(vector_set)
    messages = []
    if conversation is not None:
        rated = {
            f.interaction_id: f
            for f in selectors.feedback_for(user=request.user)
            .filter(interaction__conversation=conversation, choice="")
            .order_by("created_at")
        }
        for message in conversation.messages.select_related("interaction"):
            message.steering = ""
            message.feedback_ready = False
            message.cut = False
            message.readout_json = ""
            interaction = message.interaction
            if interaction is not None:
                message.readout_json = json.dumps(interaction.readout) if interaction.readout else ""
                message.steering = steering_label(interaction.strengths, labels)
                if interaction.status == InteractionLog.Status.CANCELLED:
                    message.steering += " · stopped"
                # Finished answers can be rated (LEARN), as they are right after streaming; a
                # rated one shows its rating (and cannot be rated again).
                message.feedback_ready = interaction.status == InteractionLog.Status.OK
                message.feedback = rated.get(interaction.pk)
                # Stopped by the token limit: the page offers to continue it.
                limit = interaction.params.get("max_new_tokens")
                message.cut = message.feedback_ready and bool(limit) and interaction.tokens >= limit
            messages.append(message)
    return render(request, "steering/chat.html", {
        "conversations": conversations[:100],
        "conversation": conversation,
        "chat_messages": messages,
        "dimension_labels": labels,
        "vector_set": vector_set,
        "vector_sets": _choosable(request.user),
        "profile": profile,
        "modes": PreferenceProfile.Mode,
        "calibrate_new_tokens": settings.STEERLAB_CALIBRATE_NEW_TOKENS,
        "max_prompt_chars": settings.STEERLAB_MAX_PROMPT_CHARS,
        "max_new_tokens": settings.STEERLAB_MAX_NEW_TOKENS,
    })


def _labels(vector_set) -> dict[str, tuple[str, str]]:
    dimensions = [*selectors.dimensions_all(), *(vector_set.dimensions.all() if vector_set else ())]
    return {d.name: (d.negative_label, d.positive_label) for d in dimensions}


@login_required
def profile(request):
    vector_set, summary = _profile(request.user)
    labels = _labels(vector_set)
    history = list(
        selectors.profile_history(user=request.user, vector_set=vector_set)[:HISTORY_LIMIT] if vector_set else []
    )
    # The same words and rounding as the chat page ("35 % Budget"), never raw strengths.
    for u in history:
        ends = labels.get(u.dimension, (f"−{u.dimension}", f"+{u.dimension}"))
        u.old_summary = selectors.strength_summary(u.old_strength, *ends)
        u.new_summary = selectors.strength_summary(u.new_strength, *ends)
    interactions = list(selectors.interactions_for(user=request.user)[:INTERACTIONS_LIMIT])
    for i in interactions:
        i.steering = steering_label(i.strengths, labels)
        i.readout_summary = readout_label(i.readout)
    return render(request, "steering/profile.html", {
        "vector_set": vector_set,
        "vector_sets": _choosable(request.user),
        "profile": summary,
        "history": history,
        "interactions": interactions,
        "interactions_limit": INTERACTIONS_LIMIT,
        "mode_help": MODE_HELP.get(summary["mode"], "") if summary else "",
    })
