"""Vector sets and the dimensions they are computed from: create, compute (extraction, then
the functional-range measurement), register an upload, preview, and take a broken set out of
use."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Callable, Sequence

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from steering import files
from steering.data import catalog
from steering.engine import LoadedModel, SteeringVectors, VectorFileError, compute_vectors, served_greedy
from steering.engine.request import steered_request
from steering.models import PreferenceDimension, VectorSet
from steering.services import jobs
from steering.services.measurement import conditions_compute, functional_range_measure, worded_choose
from steering.serving import runtime


def dimension_import_default(*, name: str) -> PreferenceDimension:
    """The shipped dimension `name`, created from steering/data on first use."""
    spec = catalog.dimension(name)
    positive, negative = catalog.examples(name)
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
            "kind": spec.get("kind", PreferenceDimension.Kind.STYLE),
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


def vector_set_register(*, vectors: SteeringVectors, name: str, owner=None, measure: bool = False) -> VectorSet:
    """Register vectors computed elsewhere as a ready vector set, and rewrite the file into
    media storage from the validated tensors, never copied byte for byte. With `measure`, the
    set is created pending instead, and its functional range is measured by a background job
    (vector_set_compute) queued once it commits.

    A user's set gets dimensions of its own, private to it, labelled from the file: an upload
    never adds to (or claims a name in) the shared catalogue. A shared set (no owner, staff)
    uses the shared dimensions it names, and gets private ones for names the catalogue lacks.
    An owner is held to STEERLAB_UPLOAD_MAX_SETS sets and STEERLAB_UPLOAD_QUOTA_BYTES bytes of
    vector files (UploadQuotaExceeded)."""
    storage = VectorSet._meta.get_field("file").storage
    relative = files.store(storage, f"vectors/upload-{uuid.uuid4().hex}.safetensors", vectors.save)
    try:
        with transaction.atomic():
            if owner is not None:
                vector_set_quota_check(owner=owner, new_bytes=storage.size(relative))
            vector_set = VectorSet.objects.create(
                name=name,
                model_id=vectors.model_id,
                method=vectors.method,
                layers=vectors.layers,
                num_layers=vectors.num_layers,
                hidden_size=vectors.hidden_size,
                functional_range=vectors.functional_range,
                negative_range=vectors.negative_range,
                file=relative,
                status=VectorSet.Status.PENDING if measure else VectorSet.Status.READY,
                progress=0 if measure else 100,
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
            if measure:
                vector_set_enqueue(vector_set=vector_set)
    except BaseException:
        storage.delete(relative)
        raise
    return vector_set


def vector_set_quota_check(*, owner, new_bytes: int = 0) -> None:
    """Held by every set a user creates, uploaded, imported or computed here (whose size is
    not known yet: `new_bytes` 0). The owner's row is locked, so two requests at once cannot
    both slip under the quota."""
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
    vector_set.mark_unavailable(reason)


def vector_set_enqueue(*, vector_set: VectorSet, sync: bool = False) -> None:
    """Compute `vector_set` in the django-q2 cluster, once the transaction that created it commits."""
    jobs.enqueue("compute_vector_set", vector_set.pk, name="vector-set", sync=sync)


EXTRACTION_SHARE = 0.8


def vector_set_compute(
    *, vector_set: VectorSet, loaded: LoadedModel, report: Callable[[int], None] | None = None
) -> VectorSet:
    """Extract the vectors of `vector_set` on `loaded`, store its file, and mark it ready; a
    failure marks it failed (jobs.run says how)."""

    def work(job: jobs.Job) -> dict:
        if loaded.model_id != vector_set.model_id:
            raise ValueError(f"The vector set is for {vector_set.model_id!r}, but the model loaded is {loaded.model_id!r}")
        if _is_import(vector_set):
            return measure(job)
        examples, labels = {}, {}
        dimensions = list(vector_set.dimensions.all())
        for dim in dimensions:
            if not dim.positive_examples or not dim.negative_examples:
                raise ValueError(f"Dimension {dim.name!r} has no training examples for one of its ends")
            examples[dim.name] = (dim.positive_examples, dim.negative_examples)
            labels[dim.name] = [dim.negative_label, dim.positive_label]
        if not examples:
            raise ValueError("The vector set has no dimensions")
        # Extraction takes most of the time, the functional-range search the rest.
        share = EXTRACTION_SHARE if settings.STEERLAB_RANGE_SEARCH else 1.0
        vectors = compute_vectors(
            loaded,
            examples,
            method=vector_set.method,
            top_k=vector_set.top_k or None,
            labels=labels,
            progress=lambda done, total: job.progress(share * done, total),
        )

        def words_for(ranged: SteeringVectors) -> dict[str, tuple[str, str]]:
            # Chosen on the ranges just found; the joint budget is then searched with them said.
            worded[:] = worded_choose(vectors=ranged, loaded=loaded, dimensions=dimensions, searched=searched)
            return {dim.name: dim.words() for dim in dimensions if dim.name in worded}

        vectors = functional_range_measure(
            vectors=vectors,
            loaded=loaded,
            progress=lambda done, total: job.progress(total * share + (1 - share) * done, total),
            searched=searched,
            words_for=words_for,
        )
        vectors = conditions_compute(vectors=vectors, loaded=loaded, dimensions=dimensions)
        return stored(job, vectors)

    def measure(job: jobs.Job) -> dict:
        # An imported set's vectors came with it; only their functional range is measured.
        vectors = files.vectors_load(vector_set.file)
        return stored(job, functional_range_measure(vectors=vectors, loaded=loaded, progress=job.progress,
                                                    searched=searched))

    searched: dict = {}
    worded: list[str] = []  # an import's dimensions have no words chosen for them

    def stored(job: jobs.Job, vectors: SteeringVectors) -> dict:
        return {
            "range_search": searched,
            "file": job.store(f"vectors/{vector_set.pk}-{uuid.uuid4().hex[:8]}.safetensors", vectors.save),
            "layers": vectors.layers,
            "num_layers": vectors.num_layers,
            "hidden_size": vectors.hidden_size,
            "functional_range": vectors.functional_range,
            "negative_range": vectors.negative_range,
            "worded_dimensions": worded,
        }

    return jobs.run(vector_set, work, file_field="file", report=report, on_ready=lambda: _forget_vectors(vector_set.pk))


def _is_import(vector_set: VectorSet) -> bool:
    """A set registered from a file whose dimensions have no examples to extract from (a GGUF
    control vector from another tool): computing it measures its stored vectors' range."""
    return bool(vector_set.file) and not any(
        dim.positive_examples or dim.negative_examples for dim in vector_set.dimensions.all()
    )


def _forget_vectors(pk: int) -> None:

    runtime.forget_vector_set(pk)


def vector_set_start(*, name: str, dimensions, method: str, top_k: int | None = None, owner=None) -> VectorSet:
    """Create a vector set for the site's model and queue its computation (after commit)."""

    with transaction.atomic():
        if owner is not None:
            vector_set_quota_check(owner=owner, new_bytes=0)
        vector_set = vector_set_create(
            name=name, model_id=runtime.site_model_id(), dimensions=dimensions, method=method, top_k=top_k, owner=owner
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

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.safetensors"
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        vectors = SteeringVectors.load(path)
    return vector_set_register(vectors=vectors_admit(vectors=vectors), name=name, owner=owner)


def vectors_admit(*, vectors: SteeringVectors, own_norms: bool = True) -> SteeringVectors:
    """The safeguards for vectors that come from outside with a functional range of their own
    (a safetensors upload, a GGUF file SteerLab exported for this model): they must fit the
    site's model, have at most STEERLAB_UPLOAD_MAX_DIMENSIONS dimensions and ranges within
    STEERLAB_MAX_FUNCTIONAL_RANGE, and (`own_norms`) get this server's residual norms. Raises
    VectorFileError naming every dimension over the ceiling."""
    loaded = runtime.site_model()
    vectors.check_model(model_id=loaded.model_id, num_layers=loaded.num_layers, hidden_size=loaded.hidden_size)
    most = settings.STEERLAB_UPLOAD_MAX_DIMENSIONS
    if len(vectors.dimensions) > most:
        raise VectorFileError(f"The file has {len(vectors.dimensions)} dimensions; an upload may have at most {most}")
    ceiling = settings.STEERLAB_MAX_FUNCTIONAL_RANGE
    widest = {dim: max(vectors.range_sides(dim)) for dim in vectors.dimensions}
    too_wide = {dim: value for dim, value in widest.items() if value > ceiling}
    if too_wide:
        raise VectorFileError(
            f"Functional ranges above this server's ceiling of {ceiling:g} (residual-norm units): "
            + ", ".join(f"{dim} {value:g}" for dim, value in sorted(too_wide.items()))
        )
    return vectors.with_residual_norms(runtime.site_residual_norms()) if own_norms else vectors


def vector_set_preview(*, vector_set: VectorSet, dimension: str, prompt: str, max_new_tokens: int) -> dict[float, str]:
    """The same prompt answered greedily at strengths −1, 0 and +1 of one `dimension` of a
    ready `vector_set`, generated together in one batch: {strength: text}. Raises ValueError
    when the vector set's file is missing or does not fit the site's model."""

    vectors = runtime.site_vectors(vector_set)
    prompt_ids = runtime.site_model().chat_ids(prompt)
    params = served_greedy(max_new_tokens)
    strengths = (-1.0, 0.0, 1.0)
    requests = [steered_request(vectors, prompt_ids, {dimension: strength}, params=params) for strength in strengths]
    return dict(zip(strengths, runtime.site_generate(requests)))
