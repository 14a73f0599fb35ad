"""GGUF control vectors for the platform (the format itself: steering/engine/controlvector.py).

- `vector_set_export_gguf`: one dimension of a ready set at one strength, as a file that
  llama.cpp (`--control-vector-scaled file.gguf:1.0`) and repeng load, adding what SteerLab
  adds at that strength. The API, `export_vectors --format gguf` and the admin call it.
- `vector_set_import_gguf`: a control vector from repeng, llama.cpp's cvector-generator,
  EasySteer or SteerLab becomes a ready one-dimension vector set, validated against this
  server's model, its functional range measured as a computed set's is. The API, the admin and
  `load_vectors` call it. A bad file raises ControlVectorError and stores nothing.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from django.conf import settings

from steering import files, selectors
from steering.data import catalog
from steering.engine import VectorFileError, record_activations
from steering.engine.controlvector import (
    FORMAT, ControlVector, ControlVectorError, control_vector_from, read_control_vector, steering_vectors_from,
    write_control_vector,
)
from steering.engine.ggufread import GgufLimits, Isolation
from steering.models import PreferenceDimension, VectorSet
from steering.services import vector_sets
from steering.services.vector_sets import vectors_admit
from steering.serving import runtime

DIMENSION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
# The texts whose residual norms give a foreign file SteerLab's unit: the range search's own
# neutral prompts, so the unit and the search that follows agree.
NORM_PROMPTS = 8
LABEL_CHARS = PreferenceDimension._meta.get_field("negative_label").max_length


def export_filename(vector_set: VectorSet, dimension: str, strength: float) -> str:
    return f"vector-set-{vector_set.pk}-{dimension}{strength:+g}.gguf"


def vector_set_export_gguf(*, vector_set: VectorSet, dimension: str, strength: float, path: Path) -> Path:
    """Write `dimension` of a ready `vector_set` at `strength` to `path` as a GGUF control
    vector. Raises ControlVectorError (and ValueError) with a message for a bad request."""
    if not vector_set.is_ready or not vector_set.file:
        raise ControlVectorError(f"Vector set {vector_set.pk} is {vector_set.status}, not ready")
    vectors = runtime.site_vectors(vector_set) if vector_set.model_id == runtime.site_model_id() else None
    if vectors is None:
        vectors = files.vectors_load(vector_set.file)
    if dimension not in vectors.dimensions:
        raise ControlVectorError(f"Unknown dimension {dimension!r}; this vector set has: {', '.join(vectors.dimensions)}")
    control = control_vector_from(vectors, dimension, strength, model_hint=_model_hint(vectors.model_id),
                                  source=f"SteerLab vector set {vector_set.pk} ({vector_set.name})")
    return write_control_vector(control, path)


def _model_hint(model_id: str) -> str:
    """The architecture name llama.cpp and repeng call the model by ("llama" for SmolLM2)."""
    if model_id == runtime.site_model_id():
        return str(getattr(runtime.site_model().model.config, "model_type", "") or "")
    return ""


def vector_set_import_gguf(
    *, upload, name: str, dimension: str, negative_label: str = "", positive_label: str = "", owner=None,
    background: bool = True,
) -> VectorSet:
    """Register an uploaded GGUF control vector as a one-dimension vector set for this server's
    model. The end labels are the caller's, else those a SteerLab file records.

    The file is read by the strict reader in a child process (read_untrusted). A file SteerLab
    exported for this model passes the safeguards of a safetensors upload (vectors_admit: this
    server's residual norms, the range ceiling) and is ready at once. Any other file's range is
    measured as a computed set's is: by a background job (the set is returned pending), or
    before returning when `background` is False (the management command).
    Raises ControlVectorError with every reason it does not fit, UploadQuotaExceeded; nothing
    is stored then."""
    if not DIMENSION_NAME.fullmatch(dimension or ""):
        raise ControlVectorError("The dimension name must be 1–50 lowercase letters, digits, '-' or '_'")
    loaded = runtime.site_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.gguf"
        _save_upload(upload, path)
        control = read_untrusted(path, max_tensors=loaded.num_layers)
    labels = _labels(control, dimension, negative_label, positive_label)
    ours = control.metadata.get("steerlab.format") == FORMAT and control.metadata.get("steerlab.model_id") == loaded.model_id
    vectors = steering_vectors_from(
        control, dimension=dimension, labels=labels, model_id=loaded.model_id, num_layers=loaded.num_layers,
        hidden_size=loaded.hidden_size, residual_norms=runtime.site_residual_norms() if ours else _residual_norms(loaded),
    )
    # A file SteerLab exported for this very model carries the range measured when its set was
    # computed: kept, within the ceiling, on this server's norms. Any other file keeps its shape
    # across blocks and has its range measured; without the search, its own scale is held to
    # the ceiling like a recorded range.
    measure = not ours and settings.STEERLAB_RANGE_SEARCH
    if not measure:
        try:
            vectors = vectors_admit(vectors=vectors, own_norms=ours)
        except VectorFileError as exc:
            raise ControlVectorError(str(exc)) from exc
    vector_set = vector_sets.vector_set_register(vectors=vectors, name=name, owner=owner, measure=measure and background)
    if measure and not background:
        vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=loaded)
    return vector_set


def read_untrusted(path: Path, *, max_tensors: int) -> ControlVector:
    """A control vector from anyone, read within STEERLAB_GGUF_MAX_BYTES and at most
    `max_tensors` tensors, in a child process capped at STEERLAB_GGUF_READ_TIMEOUT seconds and
    STEERLAB_GGUF_READ_MEMORY_BYTES of address space."""
    limits = GgufLimits(max_file_bytes=settings.STEERLAB_GGUF_MAX_BYTES, max_tensors=max_tensors)
    isolation = Isolation(timeout_s=settings.STEERLAB_GGUF_READ_TIMEOUT, memory_bytes=settings.STEERLAB_GGUF_READ_MEMORY_BYTES)
    return read_control_vector(path, limits=limits, isolation=isolation)


def _save_upload(upload, path: Path) -> None:
    """Write the upload to `path`, stopping just past STEERLAB_GGUF_MAX_BYTES (the reader then
    refuses it by its size, without the rest ever touching the disk)."""
    room = settings.STEERLAB_GGUF_MAX_BYTES + 1
    with path.open("wb") as out:
        for chunk in upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b""):
            out.write(chunk[:room])
            room -= len(chunk)
            if room <= 0:
                break


def _labels(control: ControlVector, dimension: str, negative: str, positive: str) -> list[str]:
    """The set's two end labels: the caller's, else a SteerLab file's, else "less/more D"; each
    1–LABEL_CHARS characters (what a dimension's label holds)."""
    recorded = control.metadata.get("steerlab.labels")
    if not (isinstance(recorded, list) and len(recorded) == 2 and all(isinstance(x, str) for x in recorded)):
        recorded = [f"less {dimension}", f"more {dimension}"]
    labels = [negative or recorded[0], positive or recorded[1]]
    for which, label in zip(("negative", "positive"), labels):
        if not label.strip() or len(label) > LABEL_CHARS:
            source = "given" if (negative if which == "negative" else positive) else "recorded in the file (steerlab.labels)"
            raise ControlVectorError(f"The {which} label {source} must be 1–{LABEL_CHARS} characters, "
                                     f"not {len(label)}: give a shorter one")
    return labels


def _residual_norms(loaded):
    """The model's mean residual norm per block, SteerLab's unit for a file that has none:
    the default set's (measured on this model when it was computed), else measured now on the
    range search's neutral prompts (a fresh server that has no set yet)."""
    default = selectors.vector_set_default()
    if default is not None and default.file:
        try:
            return runtime.site_vectors(default).residual_norms
        except ValueError:
            pass  # an unreadable default file: measure instead
    _, norms = record_activations(loaded, catalog.range_prompts(NORM_PROMPTS))
    return norms
