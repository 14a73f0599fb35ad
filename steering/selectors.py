"""Reads: which vector sets, profiles and logs a user may see. Views call these so that the
ownership rule lives in one place: shared sets (no owner) are everyone's, the rest only their
owner's, and another user's object is simply not found."""

from __future__ import annotations

import math

from django.db.models import Count, Q, QuerySet

from steering.files import VectorSetUnavailable
from steering.models import (
    Conversation,
    Feedback,
    InteractionLog,
    PreferenceDimension,
    PreferenceProfile,
    ProfileUpdate,
    VectorSet,
    site_model_id,
)


def vector_sets_visible(*, user) -> QuerySet[VectorSet]:
    return VectorSet.objects.filter(Q(owner__isnull=True) | Q(owner=user)).prefetch_related("dimensions")


def vector_set_default() -> VectorSet | None:
    """The shared, ready vector set for the site's model with the most dimensions (newest
    first among equals): what a user chats with until they choose another."""
    return (
        VectorSet.objects.filter(owner__isnull=True, status=VectorSet.Status.READY, model_id=site_model_id())
        .annotate(n=Count("dimensions"))
        .order_by("-n", "-created_at")
        .first()
    )


def vector_sets_choosable(*, user) -> QuerySet[VectorSet]:
    """The sets `user` may choose for their chats: visible, ready, and for the served model."""
    return vector_sets_visible(user=user).filter(status=VectorSet.Status.READY, model_id=site_model_id())


def vector_set_chosen(*, user) -> VectorSet | None:
    """The set `user` chose for their chats, while it is still usable (else the one chosen
    before it); None when they never chose one."""
    return (
        vector_sets_choosable(user=user)
        .filter(profiles__user=user, profiles__chosen_at__isnull=False)
        .order_by("-profiles__chosen_at")
        .first()
    )


def vector_set_for_user(*, user) -> VectorSet | None:
    """What `user` chats with when a request names no set: their choice, else the site default."""
    return vector_set_chosen(user=user) or vector_set_default()


def vector_set_for_chat(*, user, vector_set_id: int | None) -> VectorSet:
    """The vector set a chat request steers with (the user's own choice when it names none).
    Raises LookupError (not found / not visible), VectorSetUnavailable (its file is gone: the
    server's fault) or ValueError (not usable) with a message for the user."""
    if vector_set_id is None:
        vector_set = vector_set_for_user(user=user)
        if vector_set is None:
            raise ValueError("No default vector set is ready yet; an administrator must compute one")
        return vector_set
    vector_set = vector_sets_visible(user=user).filter(pk=vector_set_id).first()
    if vector_set is None:
        raise LookupError(f"Vector set {vector_set_id} not found")
    return vector_set_usable(vector_set)


def vector_set_usable(vector_set: VectorSet) -> VectorSet:
    """`vector_set` if a chat can steer with it here, else VectorSetUnavailable or ValueError
    (as `vector_set_for_chat`); for a set the caller has read already, as visible to its user."""
    vector_set_id = vector_set.pk
    if vector_set.status == VectorSet.Status.UNAVAILABLE:
        raise VectorSetUnavailable(
            f"Vector set {vector_set_id} is unavailable: its vector file is missing or unusable. "
            "An administrator must recompute or replace it."
        )
    if not vector_set.is_ready:
        raise ValueError(f"Vector set {vector_set_id} is {vector_set.status}, not ready")
    if vector_set.model_id != site_model_id():
        raise ValueError(
            f"Vector set {vector_set_id} is for model {vector_set.model_id!r}; this server runs {site_model_id()!r}"
        )
    return vector_set


def dimensions_all() -> QuerySet[PreferenceDimension]:
    """The shared catalogue; an uploaded set's own dimensions are seen only through that set."""
    return PreferenceDimension.objects.filter(private_to__isnull=True)


def profile_strengths(*, user, vector_set: VectorSet) -> dict[str, float]:
    profile = PreferenceProfile.objects.filter(user=user, vector_set=vector_set).first()
    return dict(profile.strengths) if profile else {}


def interactions_for(*, user) -> QuerySet[InteractionLog]:
    return InteractionLog.objects.filter(user=user).select_related("vector_set")


def feedback_for(*, user) -> QuerySet[Feedback]:
    return Feedback.objects.filter(user=user).select_related("interaction").prefetch_related("profileupdate_set")


def conversations_for(*, user, search: str = "") -> QuerySet[Conversation]:
    """`user`'s conversations, newest first; `search` matches titles and what was said."""
    conversations = Conversation.objects.filter(user=user)
    search = search.strip()
    if search:
        matching = Q(title__icontains=search) | Q(messages__content__icontains=search)
        conversations = conversations.filter(pk__in=Conversation.objects.filter(matching, user=user).values("pk"))
    return conversations


def strength_percent(strength: float) -> int:
    """|strength| as a whole percentage, rounded half away from zero after cutting float noise at
    6 decimals, as the pages' JavaScript does (profile_client.js strengthPercent): Python's round() rounds
    half to even, so 0.025 read "2 %" here and "3 %" in the browser."""
    return math.floor(round(abs(strength) * 100, 6) + 0.5)


def strength_summary(strength: float, negative_label: str, positive_label: str) -> str:
    """How a strength reads to a user: -0.35 on Budget ↔ Luxury is "35 % Budget"."""
    percent = strength_percent(strength)
    if percent == 0:
        return "Neutral"
    return f"{percent} % {positive_label if strength > 0 else negative_label}"


def profile_summary(*, user, vector_set: VectorSet) -> dict:
    """A user's profile on `vector_set` as the API and pages show it; a user with no profile
    yet reads as neutral on every dimension."""
    profile = PreferenceProfile.objects.filter(user=user, vector_set=vector_set).first()
    strengths = dict(profile.strengths) if profile else {}
    return {
        "vector_set": vector_set.pk,
        "vector_set_name": vector_set.name,
        "chosen": vector_set == vector_set_for_user(user=user),
        "mode": profile.mode if profile else PreferenceProfile.Mode.SELECT,
        "strengths": strengths,
        "dimensions": [
            {
                "name": d.name,
                "negative_label": d.negative_label,
                "positive_label": d.positive_label,
                "strength": strengths.get(d.name, 0.0),
                "summary": strength_summary(strengths.get(d.name, 0.0), d.negative_label, d.positive_label),
            }
            for d in vector_set.dimensions.all()
        ],
        "updated_at": profile.updated_at if profile else None,
    }


def profile_history(*, user, vector_set: VectorSet) -> QuerySet[ProfileUpdate]:
    return ProfileUpdate.objects.filter(profile__user=user, profile__vector_set=vector_set)
