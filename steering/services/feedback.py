"""Feedback on answers, and LEARN's writes: a feedback on an answer steered by a profile in
LEARN mode is queued, read (steering/modes/learn.py), and moves the profile."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from steering.models import Feedback, InteractionLog, PreferenceProfile, ProfileUpdate, VectorSet
from steering.modes import learn
from steering.selectors import strength_summary
from steering.services import jobs
from steering.services.profiles import profile_get_or_create, profile_update

log = logging.getLogger(__name__)


def feedback_create(
    *, user, interaction: InteractionLog, thumbs: int | None = None, text: str = "", choice: str = ""
) -> Feedback:
    if interaction.user_id != user.pk:
        raise PermissionError("Feedback only on your own interactions")
    if thumbs is None and not text.strip() and not choice:
        raise ValueError("Give thumbs up or down, a text, or a choice")
    return Feedback.objects.create(user=user, interaction=interaction, thumbs=thumbs, text=text.strip(), choice=choice)


class AlreadyRated(ValueError):
    """An answer is rated once: a second rating would move a LEARN profile twice for one answer."""


def feedback_submit(*, user, interaction: InteractionLog, thumbs: int | None = None, text: str = "") -> Feedback:
    """Log a thumbs up/down and/or a text on one of `user`'s answers. When the profile the
    answer was steered with is in LEARN mode, the feedback is queued for `learn_apply` (after
    commit, in the django-q2 cluster); otherwise it is only logged, and its note says why."""
    with transaction.atomic():
        # The interaction's row lock orders two racing ratings of one answer; the second is refused.
        InteractionLog.objects.select_for_update().filter(pk=interaction.pk).first()
        if Feedback.objects.filter(interaction=interaction, choice="").exists():
            raise AlreadyRated("This answer is already rated; its rating stays as it was given.")
        feedback = feedback_create(user=user, interaction=interaction, thumbs=thumbs, text=text)
        vector_set = interaction.vector_set
        profile = PreferenceProfile.objects.filter(user=user, vector_set=vector_set).first() if vector_set else None
        if profile is None or profile.mode != PreferenceProfile.Mode.LEARN:
            status, note = Feedback.Learn.OFF, "Saved. In Learn mode, feedback like this adjusts your preferences."
        elif learn.dissatisfaction(thumbs=thumbs, text=feedback.text) == 0.0 and thumbs == 1:
            status, note = Feedback.Learn.UNCHANGED, "Glad it suits you: your preferences stay as they are."
        else:
            status, note = Feedback.Learn.PENDING, "Learning from your feedback…"
            jobs.enqueue("learn_from_feedback", feedback.pk, name="learn")
        Feedback.objects.filter(pk=feedback.pk).update(learn_status=status, learn_note=note)
    feedback.learn_status, feedback.learn_note = status, note
    return feedback


_readers: dict[tuple, learn.FeedbackReader] = {}


def feedback_reader(vector_set: VectorSet) -> learn.FeedbackReader:
    """A reader for the dimensions of `vector_set`, kept per process while their phrases are
    unchanged (embedding the phrases is the costly part)."""
    from steering.engine.embedding import shared_embedder

    phrases = []
    for d in vector_set.dimensions.all():
        positive, negative = d.feedback_positive, d.feedback_negative
        if not (positive and negative):
            positive, negative = learn.fallback_phrases(d.negative_label, d.positive_label)
        phrases.append(learn.DimensionPhrases(d.name, tuple(positive), tuple(negative)))
    key = (settings.STEERLAB_EMBEDDER, tuple(phrases))
    if key not in _readers:
        if len(_readers) >= 16:
            _readers.clear()
        _readers[key] = learn.FeedbackReader(shared_embedder(settings.STEERLAB_EMBEDDER), phrases)
    return _readers[key]


def learn_apply(*, feedback: Feedback) -> list[ProfileUpdate]:
    """The paper's LEARN step for one logged feedback: read which ends its text asks for, move
    the profile by rate × dissatisfaction × direction, record why, and mark the feedback
    applied or unchanged, all in one transaction."""
    interaction = feedback.interaction
    vector_set = interaction.vector_set
    if vector_set is None:
        Feedback.objects.filter(pk=feedback.pk).update(
            learn_status=Feedback.Learn.UNCHANGED, learn_note="The answer's vector set no longer exists."
        )
        return []
    reader = feedback_reader(vector_set)
    readings = reader.read(feedback.text) if feedback.text else []
    sentiment = reader.sentiment(feedback.text) if feedback.thumbs is None and feedback.text else 0.0
    amount = learn.dissatisfaction(thumbs=feedback.thumbs, text=feedback.text, sentiment=sentiment)
    labels = {d.name: (d.negative_label, d.positive_label) for d in vector_set.dimensions.all()}
    profile = profile_get_or_create(user=feedback.user, vector_set=vector_set)
    with transaction.atomic():
        # The step starts from the locked row, so two feedbacks learned at once both count.
        locked = PreferenceProfile.objects.select_for_update().get(pk=profile.pk)
        changed = learn.updated_strengths(
            locked.strengths, readings, dissatisfaction=amount, rate=settings.STEERLAB_LEARN_RATE
        )
        if changed:
            reason = _learn_reason(feedback, readings, labels)
            updates = profile_update(
                profile=locked, strengths=changed, source=ProfileUpdate.Source.LEARN, reason=reason, feedback=feedback
            )
            note = "Learned: " + "; ".join(
                f"{u.dimension} {strength_summary(u.old_strength, *labels[u.dimension])} → "
                f"{strength_summary(u.new_strength, *labels[u.dimension])}"
                for u in updates
            )
            status = Feedback.Learn.APPLIED
        else:
            updates = []
            status, note = Feedback.Learn.UNCHANGED, _unchanged_note(feedback, readings, amount)
        Feedback.objects.filter(pk=feedback.pk).update(learn_status=status, learn_note=note)
    return updates


def _learn_reason(feedback: Feedback, readings, labels) -> str:
    said = f"“{feedback.text[:80]}”" if feedback.text else ""
    thumbs = {1: "👍", -1: "👎"}.get(feedback.thumbs, "")
    asked = ", ".join(
        f"{labels[r.dimension][1] if r.direction > 0 else labels[r.dimension][0]} ({r.dimension})" for r in readings
    )
    return " ".join(part for part in (thumbs, said, f"asked for {asked}") if part)


def _unchanged_note(feedback: Feedback, readings, amount: float) -> str:
    if amount == 0.0:
        return "Nothing to change: the feedback sounds satisfied."
    if not readings:
        return (
            "Saved, but it did not say what to change. Add a few words, e.g. “too expensive” or “more formal”."
            if feedback.text else "Saved. Add a few words (“too formal”, “cheaper”) so the answer can change."
        )
    return "Your preferences are already at the end of that scale."


def learn_failed(*, feedback_id: int, result: str) -> None:
    """django-q2 gave up on a LEARN task: say so on the feedback rather than leave it queued."""
    log.error("LEARN for feedback %s failed: %s", feedback_id, result)
    Feedback.objects.filter(pk=feedback_id, learn_status=Feedback.Learn.PENDING).update(
        learn_status=Feedback.Learn.FAILED, learn_note="Learning from this feedback failed; it is still logged."
    )
