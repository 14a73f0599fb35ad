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

from steering import files, selectors

from steering.data import catalog
from steering.engine import record_activations
from steering.engine.controlvector import (
    FORMAT, ControlVectorError, control_vector_from, read_control_vector, steering_vectors_from, write_control_vector,
)
from steering.models import VectorSet
from steering.services import vector_sets
from steering.services.vector_sets import functional_range_measure
from steering.serving import runtime

DIMENSION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
# The texts whose residual norms give a foreign file SteerLab's unit: the range search's own
# neutral prompts, so the unit and the search that follows agree.
NORM_PROMPTS = 8


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
    *, upload, name: str, dimension: str, negative_label: str = "", positive_label: str = "", owner=None
) -> VectorSet:
    """Register an uploaded GGUF control vector as a ready one-dimension vector set for this
    server's model. The end labels are the caller's, else those a SteerLab file records.
    Raises ControlVectorError with every reason it does not fit; nothing is stored then."""
    if not DIMENSION_NAME.fullmatch(dimension or ""):
        raise ControlVectorError("The dimension name must be 1–50 lowercase letters, digits, '-' or '_'")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.gguf"
        with path.open("wb") as out:
            for chunk in upload.chunks() if hasattr(upload, "chunks") else [upload.read()]:
                out.write(chunk)
        control = read_control_vector(path)
    recorded = control.metadata.get("steerlab.labels") or []
    labels = [negative_label or (recorded[0] if len(recorded) == 2 else f"less {dimension}"),
              positive_label or (recorded[1] if len(recorded) == 2 else f"more {dimension}")]
    loaded = runtime.site_model()
    residual_norms = _residual_norms(loaded)
    vectors = steering_vectors_from(
        control, dimension=dimension, labels=labels, model_id=loaded.model_id, num_layers=loaded.num_layers,
        hidden_size=loaded.hidden_size, residual_norms=residual_norms,
    )
    # A file SteerLab exported for this very model carries the range measured when its set
    # was computed, on these same vectors: kept, so a round trip steers exactly as before.
    # Any other file's range is measured as a computed set's is.
    if not (control.metadata.get("steerlab.format") == FORMAT and control.metadata.get("steerlab.model_id") == loaded.model_id):
        vectors = functional_range_measure(vectors=vectors, loaded=loaded, hooks=runtime.site_hooks())
    return vector_sets.vector_set_register(vectors=vectors, name=name, owner=owner)


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
