"""Writes: dimensions, vector sets and their computation, profiles and their history,
interaction logs, conversations and feedback."""

from __future__ import annotations

import itertools
import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from steering import data
from steering.modes import learn
from steering.modes.calibrate import CalibrationState
from steering.evaluation import functional_range_measure, save_progress
from steering.modes.calibrate import done as calibration_done
from steering.modes.calibrate import result as calibration_result
from steering.engine import (
    GenerationParams,
    GenerationRequest,
    LoadedModel,
    SteeringVectors,
    VectorFileError,
    compute_vectors,
)
from steering.models import (
    Conversation,
    Feedback,
    InteractionLog,
    Message,
    PreferenceDimension,
    PreferenceProfile,
    ProfileUpdate,
    VectorSet,
    clean_preferences,
)
from steering.selectors import strength_summary

log = logging.getLogger(__name__)


def dimension_import_default(*, name: str) -> PreferenceDimension:
    """The shipped dimension `name`, created from steering/data on first use."""
    spec = data.dimension(name)
    positive, negative = data.examples(name)
    feedback = {"feedback_positive": spec.get("feedback_positive", []), "feedback_negative": spec.get("feedback_negative", [])}
    dimension, created = PreferenceDimension.objects.get_or_create(
        name=name,
        private_to=None,
        defaults={
            "negative_label": spec["negative_label"],
            "positive_label": spec["positive_label"],
            "description": spec.get("description", ""),
            "positive_examples": positive,
            "negative_examples": negative,
            "reference_positive": spec.get("reference_positive", []),
            "reference_negative": spec.get("reference_negative", []),
            **feedback,
        },
    )
    if not created and not (dimension.feedback_positive or dimension.feedback_negative):
        # A database from before LEARN had phrases: give it the shipped ones, once.
        PreferenceDimension.objects.filter(pk=dimension.pk).update(**feedback)
        dimension.refresh_from_db()
    return dimension


def vector_set_create(
    *,
    name: str,
    model_id: str,
    dimensions: Sequence[PreferenceDimension],
    method: str = VectorSet.Method.CAA,
    top_k: int | None = None,
    owner=None,
) -> VectorSet:
    with transaction.atomic():
        vector_set = VectorSet.objects.create(name=name, model_id=model_id, method=method, top_k=top_k, owner=owner)
        vector_set.dimensions.set(dimensions)
    return vector_set


def dimension_update_or_create(
    *, name: str, positive: Sequence[str], negative: Sequence[str], negative_label: str, positive_label: str
) -> PreferenceDimension:
    dimension, _ = PreferenceDimension.objects.update_or_create(
        name=name,
        private_to=None,
        defaults={
            "positive_examples": list(positive),
            "negative_examples": list(negative),
            "negative_label": negative_label,
            "positive_label": positive_label,
        },
    )
    return dimension


class UploadQuotaExceeded(ValueError):
    """The owner already has as many vector sets, or bytes of vector files, as one user may."""


def vector_set_register(*, vectors: SteeringVectors, name: str, owner=None) -> VectorSet:
    """Register vectors computed elsewhere as a ready vector set, and rewrite the file into
    media storage from the validated tensors, never copied byte for byte.

    A user's set gets dimensions of its own, private to it, labelled from the file: an upload
    never adds to (or claims a name in) the shared catalogue. A shared set (no owner, staff)
    uses the shared dimensions it names, and gets private ones for names the catalogue lacks.
    An owner is held to STEERLAB_UPLOAD_MAX_SETS sets and STEERLAB_UPLOAD_QUOTA_BYTES bytes of
    vector files (UploadQuotaExceeded)."""
    relative = f"vectors/upload-{uuid.uuid4().hex}.safetensors"
    path = vectors.save(Path(settings.MEDIA_ROOT) / relative)
    try:
        with transaction.atomic():
            if owner is not None:
                _upload_quota_check(owner=owner, new_bytes=path.stat().st_size)
            vector_set = VectorSet.objects.create(
                name=name,
                model_id=vectors.model_id,
                method=vectors.method,
                layers=vectors.layers,
                num_layers=vectors.num_layers,
                hidden_size=vectors.hidden_size,
                functional_range=vectors.functional_range,
                file=relative,
                status=VectorSet.Status.READY,
                progress=100,
                owner=owner,
            )
            shared = {}
            if owner is None:
                shared = {d.name: d for d in PreferenceDimension.objects.filter(
                    name__in=vectors.dimensions, private_to__isnull=True)}
            dimensions = []
            for dim in vectors.dimensions:
                if dim in shared:
                    dimensions.append(shared[dim])
                    continue
                negative_label, positive_label = vectors.labels.get(dim) or [f"less {dim}", f"more {dim}"]
                dimensions.append(PreferenceDimension.objects.create(
                    name=dim, negative_label=negative_label, positive_label=positive_label, private_to=vector_set
                ))
            vector_set.dimensions.set(dimensions)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return vector_set


def _upload_quota_check(*, owner, new_bytes: int) -> None:
    # The owner's row is locked, so two uploads at once cannot both slip under the quota.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    owned = list(VectorSet.objects.filter(owner=owner).exclude(file=""))
    count_limit, bytes_limit = settings.STEERLAB_UPLOAD_MAX_SETS, settings.STEERLAB_UPLOAD_QUOTA_BYTES
    if VectorSet.objects.filter(owner=owner).count() >= count_limit:
        raise UploadQuotaExceeded(
            f"You already have {count_limit} vector sets (the most one user may have); delete one first."
        )
    used = 0
    for vector_set in owned:
        try:
            used += vector_set.file.size
        except OSError:
            pass  # a missing file takes no room
    if used + new_bytes > bytes_limit:
        raise UploadQuotaExceeded(
            f"Your vector files would take {used + new_bytes} bytes; one user may have {bytes_limit}. "
            "Delete a vector set first."
        )


def vector_set_mark_unavailable(*, vector_set: VectorSet, reason: str) -> None:
    """A ready set whose file turned out missing or unusable: take it out of use, saying why
    (for staff; no path), instead of leaving it "ready" for every request to fail on."""
    log.error("Vector set %s is unavailable: %s", vector_set.pk, reason)
    VectorSet.objects.filter(pk=vector_set.pk, status=VectorSet.Status.READY).update(
        status=VectorSet.Status.UNAVAILABLE, error=reason[:2000]
    )
    vector_set.status, vector_set.error = VectorSet.Status.UNAVAILABLE, reason[:2000]


def vector_set_enqueue(*, vector_set: VectorSet, sync: bool = False) -> None:
    """Compute `vector_set` in the django-q2 cluster, once the transaction that created it
    commits (a worker must find the row)."""
    from django_q.tasks import async_task

    def enqueue() -> None:
        async_task(
            "steering.tasks.compute_vector_set",
            vector_set.pk,
            task_name=f"vector-set-{vector_set.pk}",
            hook="steering.tasks.compute_vector_set_finished",
            sync=sync or settings.Q_CLUSTER.get("sync", False),
        )

    transaction.on_commit(enqueue)


EXTRACTION_SHARE = 0.8


def vector_set_compute(
    *, vector_set: VectorSet, loaded: LoadedModel, report: Callable[[int], None] | None = None
) -> VectorSet:
    """Extract the vectors of `vector_set` on `loaded`, write its file, and mark it ready.
    Any failure marks it failed with a readable error and leaves no new file behind. A set
    deleted before or while it computes stays deleted: the work ends quietly, its file gone."""
    if not VectorSet.objects.filter(pk=vector_set.pk).update(status=VectorSet.Status.RUNNING, progress=0, error=""):
        log.info("Vector set %s was deleted before its computation started", vector_set.pk)
        return vector_set
    vector_set.refresh_from_db()
    path: Path | None = None
    # A recomputation that fails keeps the file of the last one that succeeded: the set is
    # marked failed, but vectors once committed are not thrown away, nor left orphaned on disk.
    kept = vector_set.file.name if vector_set.file else ""
    try:
        examples, labels = {}, {}
        for dim in vector_set.dimensions.all():
            if not dim.positive_examples or not dim.negative_examples:
                raise ValueError(f"Dimension {dim.name!r} has no training examples for one of its ends")
            examples[dim.name] = (dim.positive_examples, dim.negative_examples)
            labels[dim.name] = [dim.negative_label, dim.positive_label]
        if not examples:
            raise ValueError("The vector set has no dimensions")
        if loaded.model_id != vector_set.model_id:
            raise ValueError(f"The vector set is for {vector_set.model_id!r}, but the model loaded is {loaded.model_id!r}")
        # Extraction takes most of the time, the functional-range search the rest.
        share = EXTRACTION_SHARE if settings.STEERLAB_RANGE_SEARCH else 1.0
        vectors = compute_vectors(
            loaded,
            examples,
            method=vector_set.method,
            top_k=vector_set.top_k or None,
            labels=labels,
            progress=lambda done, total: save_progress(vector_set, share * done, total, report),
        )
        vectors = functional_range_measure(
            vectors=vectors,
            loaded=loaded,
            progress=lambda done, total: save_progress(vector_set, total * share + (1 - share) * done, total, report),
        )
        relative = f"vectors/{vector_set.pk}-{uuid.uuid4().hex[:8]}.safetensors"
        path = vectors.save(Path(settings.MEDIA_ROOT) / relative)
        previous = vector_set.file.name if vector_set.file else None
        with transaction.atomic():
            # An update, not save(): save() would insert the row again if the set was deleted
            # meanwhile, bringing it back as "ready".
            saved = VectorSet.objects.filter(pk=vector_set.pk).update(
                file=relative,
                layers=vectors.layers,
                num_layers=vectors.num_layers,
                hidden_size=vectors.hidden_size,
                functional_range=vectors.functional_range,
                status=VectorSet.Status.READY,
                progress=100,
                updated_at=timezone.now(),
            )
            if not saved:
                raise _Deleted()
            storage = vector_set.file.storage
            if previous and previous != relative:  # a recomputation replaces the old file
                transaction.on_commit(lambda: storage.delete(previous))
            transaction.on_commit(lambda: _forget_vectors(vector_set.pk))
        vector_set.file.name = relative
        vector_set.layers, vector_set.num_layers = vectors.layers, vectors.num_layers
        vector_set.hidden_size, vector_set.functional_range = vectors.hidden_size, vectors.functional_range
        vector_set.status, vector_set.progress = VectorSet.Status.READY, 100
    except (_Deleted, VectorSet.DoesNotExist):
        log.info("Vector set %s was deleted while it computed; its work is dropped", vector_set.pk)
        if path is not None:
            path.unlink(missing_ok=True)
    except BaseException as exc:
        # BaseException too: django-q2 ends a task that runs past its timeout by raising
        # TimeoutException, a SystemExit, inside it; that must also leave "failed" and no file.
        log.exception("Computing vector set %s failed", vector_set.pk)
        if path is not None:
            path.unlink(missing_ok=True)
        failed = VectorSet.objects.filter(pk=vector_set.pk).update(
            status=VectorSet.Status.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:2000], file=kept
        )
        if failed:
            vector_set.refresh_from_db()
        if not isinstance(exc, Exception):
            raise
    return vector_set


class _Deleted(Exception):
    """The vector set being computed was deleted meanwhile."""


def _forget_vectors(pk: int) -> None:
    from steering import runtime

    runtime.forget_vector_set(pk)


def vector_set_task_finished(*, vector_set_id: int, success: bool, result: str) -> None:
    """After the cluster gives up on a computation (the worker died, the last attempt failed),
    a set still marked pending or running is marked failed, so nobody waits on it forever."""
    if success:
        return
    VectorSet.objects.filter(
        pk=vector_set_id, status__in=[VectorSet.Status.PENDING, VectorSet.Status.RUNNING]
    ).update(status=VectorSet.Status.FAILED, error=f"The background task failed: {str(result)[:500]}")


# -- profiles -----------------------------------------------------------------------------


def profile_get_or_create(*, user, vector_set: VectorSet) -> PreferenceProfile:
    profile, _ = PreferenceProfile.objects.get_or_create(user=user, vector_set=vector_set)
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


# -- conversations, interactions, feedback --------------------------------------------------


def conversation_start(*, user, first_prompt: str, vector_set: VectorSet | None) -> Conversation:
    title = " ".join(first_prompt.split())[:80]
    return Conversation.objects.create(user=user, title=title, vector_set=vector_set)


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
            conversation.save(update_fields=["updated_at"])
    return log_entry


def feedback_create(
    *, user, interaction: InteractionLog, thumbs: int | None = None, text: str = "", choice: str = ""
) -> Feedback:
    if interaction.user_id != user.pk:
        raise PermissionError("Feedback only on your own interactions")
    if thumbs is None and not text.strip() and not choice:
        raise ValueError("Give thumbs up or down, a text, or a choice")
    return Feedback.objects.create(user=user, interaction=interaction, thumbs=thumbs, text=text.strip(), choice=choice)


# -- vector sets, as the API and admin start them ----------------------------------------------


def vector_set_start(*, name: str, dimensions, method: str, top_k: int | None = None, owner=None) -> VectorSet:
    """Create a vector set for the site's model and queue its computation (after commit)."""
    from steering.runtime import site_model_id

    with transaction.atomic():
        vector_set = vector_set_create(
            name=name, model_id=site_model_id(), dimensions=dimensions, method=method, top_k=top_k, owner=owner
        )
        vector_set_enqueue(vector_set=vector_set)
    return vector_set


def vector_set_restart(*, vector_set: VectorSet) -> VectorSet:
    """Queue a vector set's computation again; refused while one is pending or running."""
    with transaction.atomic():
        claimed = VectorSet.objects.filter(
            pk=vector_set.pk,
            status__in=[VectorSet.Status.READY, VectorSet.Status.FAILED, VectorSet.Status.UNAVAILABLE],
        ).update(status=VectorSet.Status.PENDING, progress=0, error="")
        if not claimed:
            raise ValueError(f"Vector set {vector_set.pk} is already being computed")
        vector_set_enqueue(vector_set=vector_set)
    vector_set.refresh_from_db()
    return vector_set


def vector_set_upload(*, upload, name: str, owner=None) -> VectorSet:
    """Validate an uploaded vector file against the site's model and register it. Raises
    VectorFileError with every problem, UploadQuotaExceeded; nothing is stored unless valid.

    The file's residual norms are replaced by the ones this server measured on its own model,
    and its functional ranges must stay under STEERLAB_MAX_FUNCTIONAL_RANGE: together they
    bound what a strength of ±1 adds to the residual stream, whatever the file says."""
    from steering.runtime import site_model, site_residual_norms

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.safetensors"
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        vectors = SteeringVectors.load(path)
    loaded = site_model()
    vectors.check_model(model_id=loaded.model_id, num_layers=loaded.num_layers, hidden_size=loaded.hidden_size)
    most = settings.STEERLAB_UPLOAD_MAX_DIMENSIONS
    if len(vectors.dimensions) > most:
        raise VectorFileError(f"The file has {len(vectors.dimensions)} dimensions; an upload may have at most {most}")
    ceiling = settings.STEERLAB_MAX_FUNCTIONAL_RANGE
    too_wide = {dim: value for dim, value in vectors.functional_range.items() if value > ceiling}
    if too_wide:
        raise VectorFileError(
            f"Functional ranges above this server's ceiling of {ceiling:g} (residual-norm units): "
            + ", ".join(f"{dim} {value:g}" for dim, value in sorted(too_wide.items()))
        )
    vectors = vectors.with_residual_norms(site_residual_norms())
    return vector_set_register(vectors=vectors, name=name, owner=owner)


# -- health ---------------------------------------------------------------------------------------


def vector_sets_unavailable() -> list[dict]:
    """Sets out of use because of their file, for health: those already marked, and ready ones
    whose file has gone missing (marked now). A corrupt file is found when it is first loaded."""
    for vector_set in VectorSet.objects.filter(status=VectorSet.Status.READY):
        if not vector_set.file or not vector_set.file.storage.exists(vector_set.file.name):
            vector_set_mark_unavailable(vector_set=vector_set, reason="its vector file is missing")
    return [
        {"id": pk, "name": name, "reason": error}
        for pk, name, error in VectorSet.objects.filter(status=VectorSet.Status.UNAVAILABLE)
        .order_by("pk").values_list("pk", "name", "error")
    ]



def health_report() -> dict:
    """Database and model status for /api/health/. A first call starts loading the model in
    the background, so a fresh server reports "loading" (503) until it can answer. Vector sets
    whose file is missing or corrupt make it "degraded" (still 200: the others work), named
    in `vector_sets_unavailable`."""
    from django.db import connection
    from django_q.brokers import get_broker

    from steering import runtime

    report = {"status": "ok", "database": "ok", "queue_depth": {}}
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["queue_depth"]["tasks"] = get_broker().queue_size() or 0
    except Exception as exc:  # any driver error means "not usable"; say which
        log.warning("Health check: database unusable: %s", exc)
        report.update(status="error", database=f"unavailable: {exc.__class__.__name__}")
    model = runtime.model_status()
    report.update(
        model=model["model_id"], model_loaded=model["loaded"], device=model["device"],
        vector_sets_loaded=runtime.loaded_vector_sets(),
    )
    report["queue_depth"].update(runtime.inference_queue_depth())
    if report["database"] == "ok":
        unavailable = vector_sets_unavailable()
        report["vector_sets_unavailable"] = unavailable
        if unavailable:
            report["status"] = "degraded"
    if model["error"]:
        report.update(status="error", model_error=model["error"])
    elif not model["loaded"] and report["status"] == "ok":
        report["status"] = "loading"
    return report


# -- chat -------------------------------------------------------------------------------------------

HISTORY_MESSAGES = 6  # earlier turns of a conversation given to the model as context


@dataclass
class ChatPlan:
    """Everything a chat generation needs, resolved before it is queued: the strengths the
    user's profile and overrides amount to, and the tokenised prompt. The steering tensors are
    made by whichever process runs the model (GenerationSpec.to_request), not here."""

    vector_set: VectorSet
    strengths: dict[str, float]
    params: dict
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
) -> ChatPlan:
    """Resolve a chat request. The user's profile on the vector set, overridden dimension by
    dimension by `preferences`, gives the strengths. Raises LookupError for a vector set or
    conversation the user cannot see, ValueError for anything else wrong, with a message."""
    from steering import runtime, selectors

    prompt = prompt.strip()
    if not prompt:
        raise ValueError("The prompt is empty")
    conversation = None
    if conversation_id is not None:
        conversation = selectors.conversations_for(user=user).filter(pk=conversation_id).first()
        if conversation is None:
            raise LookupError(f"Conversation {conversation_id} not found")
        if vector_set_id is None and conversation.vector_set_id is not None:
            vector_set_id = conversation.vector_set_id
    vector_set = selectors.vector_set_for_chat(user=user, vector_set_id=vector_set_id)
    strengths = selectors.profile_strengths(user=user, vector_set=vector_set)
    strengths.update(clean_preferences(vector_set, preferences or {}))
    strengths = {name: value for name, value in strengths.items() if value != 0.0}
    generation = GenerationParams(**params)  # bad parameters fail here, with a message, before queueing
    # Earlier turns: the stored conversation's, or those the client sent itself (/v1).
    history = [{"role": m["role"], "content": m["content"]} for m in history or []]
    if conversation is not None:
        earlier = list(conversation.messages.order_by("-created_at", "-pk")[:HISTORY_MESSAGES])[::-1]
        history = [{"role": m.role, "content": m.content} for m in earlier if m.content]
    system = steering_prompt(vector_set=vector_set, strengths=strengths) if vector_set.prompt_with_steering else None
    prompt_ids = chat_fit_context(
        history=history, prompt=prompt, max_new_tokens=generation.max_new_tokens, loaded=runtime.site_model(),
        system=system,
    )
    return ChatPlan(vector_set, strengths, params, prompt_ids, conversation)


def chat_context_tokens(loaded=None) -> int:
    """The served model's context in tokens (what its position embeddings cover)."""
    from steering import runtime

    config = (loaded or runtime.site_model()).model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048  # a config that names none: the smallest context of the common families


def chat_fit_context(
    *, history: list[dict], prompt: str, max_new_tokens: int, loaded, system: str | None = None
) -> list[int]:
    """The prompt's token ids with as much of `history` (oldest first) as fits the model's
    context beside `max_new_tokens`: whole turns are dropped, oldest first, so that the model
    never sees an answer without its question. Raises ValueError with the numbers when even
    the prompt alone does not fit. Counted in the served model's own tokens, chat template
    included, because characters say little about tokens (one emoji can be several). `system`
    is the prompt-with-steering instruction, kept whatever is trimmed."""
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
    while history:
        ids = loaded.chat_ids([*framing, *history, question], system=system)
        if len(ids) <= room:
            return ids
        history = history[1:]
        while history and history[0]["role"] != "user":
            history = history[1:]
    return alone


def steering_prompt(*, vector_set: VectorSet, strengths: dict[str, float]) -> str | None:
    """The system prompt of a "prompt with steering" vector set for one request: `strengths`
    (that request's, from its own user's profile and overrides) in words. It lives only in
    that request's token ids: no conversation, log or other request ever holds it."""
    from steering.engine.prompting import preferences_instruction

    ends = []
    for dimension in vector_set.dimensions.filter(name__in=list(strengths)).order_by("name"):
        try:
            spec = data.dimension(dimension.name)
        except KeyError:
            spec = {}
        ends.append((
            spec.get("prompt_positive") or dimension.positive_label,
            spec.get("prompt_negative") or dimension.negative_label,
            strengths[dimension.name],
        ))
    return preferences_instruction(ends)


# -- admin preview ----------------------------------------------------------------------------


def vector_set_preview(*, vector_set: VectorSet, dimension: str, prompt: str, max_new_tokens: int) -> dict[float, str]:
    """The same prompt answered greedily at strengths −1, 0 and +1 of one `dimension` of a
    ready `vector_set`, generated together in one batch: {strength: text}. Raises ValueError
    when the vector set's file is missing or does not fit the site's model."""
    from steering import runtime

    vectors = runtime.site_vectors(vector_set)
    prompt_ids = runtime.site_model().chat_ids(prompt)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    strengths = (-1.0, 0.0, 1.0)
    requests = [
        GenerationRequest(prompt_ids=prompt_ids, params=params, steering=vectors.layer_deltas({dimension: strength}))
        for strength in strengths
    ]
    return dict(zip(strengths, runtime.site_generate(requests)))


# -- calibration ----------------------------------------------------------------------------

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


# -- LEARN ------------------------------------------------------------------------------------


def feedback_submit(*, user, interaction: InteractionLog, thumbs: int | None = None, text: str = "") -> Feedback:
    """Log a thumbs up/down and/or a text on one of `user`'s answers. When the profile the
    answer was steered with is in LEARN mode, the feedback is queued for `learn_apply` (after
    commit, in the django-q2 cluster); otherwise it is only logged, and its note says why."""
    with transaction.atomic():
        feedback = feedback_create(user=user, interaction=interaction, thumbs=thumbs, text=text)
        vector_set = interaction.vector_set
        profile = PreferenceProfile.objects.filter(user=user, vector_set=vector_set).first() if vector_set else None
        if profile is None or profile.mode != PreferenceProfile.Mode.LEARN:
            status, note = Feedback.Learn.OFF, "Saved. In Learn mode, feedback like this adjusts your preferences."
        elif learn.dissatisfaction(thumbs=thumbs, text=feedback.text) == 0.0 and thumbs == 1:
            status, note = Feedback.Learn.UNCHANGED, "Glad it suits you: your preferences stay as they are."
        else:
            status, note = Feedback.Learn.PENDING, "Learning from your feedback…"
            transaction.on_commit(lambda: _learn_enqueue(feedback.pk))
        Feedback.objects.filter(pk=feedback.pk).update(learn_status=status, learn_note=note)
    feedback.learn_status, feedback.learn_note = status, note
    return feedback


def _learn_enqueue(feedback_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "steering.tasks.learn_from_feedback",
        feedback_id,
        task_name=f"learn-{feedback_id}",
        hook="steering.tasks.learn_from_feedback_finished",
        sync=settings.Q_CLUSTER.get("sync", False),
    )


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
