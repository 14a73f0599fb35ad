"""Profiles: a user's strengths on a vector set, every change recorded (SELECT's writes,
undo), and CALIBRATE's writes (the rule is steering/modes/calibrate.py)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from steering import selectors

from steering.models import Feedback, InteractionLog, PreferenceProfile, ProfileUpdate, VectorSet, clean_preferences
from steering.modes.calibrate import CalibrationState
from steering.modes.calibrate import done as calibration_done
from steering.modes.calibrate import result as calibration_result


def profile_get_or_create(*, user, vector_set: VectorSet) -> PreferenceProfile:
    profile, _ = PreferenceProfile.objects.get_or_create(user=user, vector_set=vector_set)
    return profile


def profile_choose(*, user, vector_set_id: int) -> PreferenceProfile:
    """Make the set `vector_set_id` the one `user`'s chats steer with when a request names none
    (the chat page, REST, /v1, calibration), keeping their strengths on every set. Raises
    ValueError, with a message for the user, for a set they cannot see, one not ready, or one
    for another model than the server runs."""
    vector_set = selectors.vector_sets_visible(user=user).filter(pk=vector_set_id).first()
    if vector_set is None:
        raise ValueError(f"Vector set {vector_set_id} not found")
    selectors.vector_set_usable(vector_set)  # ValueError (VectorSetUnavailable is one) says why not
    profile = profile_get_or_create(user=user, vector_set=vector_set)
    PreferenceProfile.objects.filter(pk=profile.pk).update(chosen_at=timezone.now())
    profile.refresh_from_db()
    return profile


def profile_update(
    *,
    profile: PreferenceProfile,
    strengths: dict,
    source: str,
    reason: str = "",
    replace: bool = False,
    mode: str | None = None,
    feedback: Feedback | None = None,
) -> list[ProfileUpdate]:
    """Set some strengths of `profile` (all of them, missing ones to 0, with `replace`),
    recording one ProfileUpdate per strength that changes. Raises ValueError naming every
    bad dimension or value, and then changes nothing."""
    cleaned = clean_preferences(profile.vector_set, strengths)
    with transaction.atomic():
        # Lock the row: two tabs moving sliders at once must not lose an update.
        profile = PreferenceProfile.objects.select_for_update().get(pk=profile.pk)
        current = dict(profile.strengths)
        target = {name: 0.0 for name in current} if replace else dict(current)
        target.update(cleaned)
        updates = [
            ProfileUpdate(
                profile=profile,
                dimension=name,
                old_strength=current.get(name, 0.0),
                new_strength=value,
                source=source,
                reason=reason,
                feedback=feedback,
            )
            for name, value in sorted(target.items())
            if value != current.get(name, 0.0)
        ]
        profile.strengths = {name: value for name, value in target.items() if value != 0.0}
        if mode is not None:
            profile.mode = mode
        profile.save()
        ProfileUpdate.objects.bulk_create(updates)
    return updates


def profile_update_undo(*, update: ProfileUpdate) -> ProfileUpdate:
    """Put one dimension back where `update` found it, as a new, recorded change."""
    if update.undone:
        raise ValueError("This change was already undone")
    with transaction.atomic():
        (undo,) = profile_update(
            profile=update.profile,
            strengths={update.dimension: update.old_strength},
            source=ProfileUpdate.Source.UNDO,
            reason=f"Undid: {update}",
        ) or (None,)
        ProfileUpdate.objects.filter(pk=update.pk).update(undone=True)
    update.undone = True
    return undo


def calibration_choice_record(*, user, choice: str, answer_ids: tuple[int | None, int | None]) -> Feedback | None:
    """Log one CALIBRATE choice as feedback on the two answers compared (A, with B beside it).
    Without both answers' ids there is nothing to attach it to, and nothing is logged."""
    a_id, b_id = answer_ids
    if a_id is None or b_id is None:
        if a_id is not None or b_id is not None:
            raise ValueError("Give both interaction_a and interaction_b, or neither.")
        return None
    answers = {i.pk: i for i in InteractionLog.objects.filter(user=user, pk__in=[a_id, b_id])}
    if a_id not in answers or b_id not in answers or a_id == b_id:
        raise ValueError("interaction_a and interaction_b must be two of your own answers.")
    return Feedback.objects.create(user=user, interaction=answers[a_id], other_interaction=answers[b_id], choice=choice)


def calibration_apply(
    *,
    user,
    vector_set: VectorSet,
    dimension: str,
    state: CalibrationState,
    feedback: Feedback | None = None,
) -> list[ProfileUpdate]:
    """Write a finished calibration's result to `user`'s profile on `vector_set` (and switch
    the profile to CALIBRATE mode). Raises ValueError for an unfinished calibration or a
    dimension the set lacks, and then changes nothing."""
    if state.dimension != dimension:
        raise ValueError(f"the calibration is of {state.dimension!r}, not {dimension!r}")
    if not calibration_done(state):
        raise ValueError(f"calibration of {dimension!r} is not done ({state.round} of {state.rounds} rounds)")
    return profile_update(
        profile=profile_get_or_create(user=user, vector_set=vector_set),
        strengths={dimension: calibration_result(state)},
        source=ProfileUpdate.Source.CALIBRATE,
        reason=f"Calibrated over {state.rounds} rounds",
        mode=PreferenceProfile.Mode.CALIBRATE,
        feedback=feedback,
    )
