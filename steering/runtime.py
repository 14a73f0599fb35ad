"""The site's one shared model and what hangs off it, loaded lazily once per process.

Lazily, because django-q2 forks its workers from the cluster process: a model (and CUDA)
initialised before the fork would be shared badly, so each process loads on first use.
Steering vectors are read from a vector set's file once per process and kept; hooks sit on
every decoder layer from the start, so any vector set can be used without touching the model
while another thread runs it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from django.conf import settings

from steering.engine import GenerationRequest, LoadedModel, SteeringHooks, SteeringVectors, load_model, stream_batch
from steering.engine.models import model_id_for

_lock = threading.Lock()
_loaded: LoadedModel | None = None
_loaded_key: tuple[str, str] | None = None
_hooks: SteeringHooks | None = None
_vectors: dict[tuple[int, str], SteeringVectors] = {}
_load_error: str | None = None
_warming: threading.Thread | None = None


def site_model_id() -> str:
    return model_id_for(settings.STEERLAB_MODEL)


def site_model() -> LoadedModel:
    """The model STEERLAB_MODEL names (reloaded only if the setting changes, as tests do)."""
    global _loaded, _loaded_key, _hooks
    key = (settings.STEERLAB_MODEL, settings.STEERLAB_DEVICE)
    with _lock:
        if _loaded is None or _loaded_key != key:
            try:
                loaded = load_model(settings.STEERLAB_MODEL, device=settings.STEERLAB_DEVICE)
            except Exception as exc:
                global _load_error
                _load_error = f"{exc.__class__.__name__}: {exc}"
                raise
            _load_error = None
            _hooks = SteeringHooks(loaded.layers, range(loaded.num_layers))
            _vectors.clear()
            _loaded, _loaded_key = loaded, key
        return _loaded


def warm_up() -> None:
    """Start loading the model in a background thread (once), so a health probe or the first
    page view does not wait ~20 s for it."""
    global _warming
    with _lock:
        if site_model_loaded() or (_warming is not None and _warming.is_alive()):
            return
        _warming = threading.Thread(target=_warm, name="steerlab-model-load", daemon=True)
        _warming.start()


def _warm() -> None:
    try:
        site_model()
    except Exception:  # recorded in _load_error, reported by model_status()
        pass


def model_status() -> dict:
    loaded = _loaded if site_model_loaded() else None
    if loaded is None and _load_error is None:
        warm_up()
    return {
        "model_id": site_model_id(),
        "loaded": loaded is not None,
        "device": str(loaded.device) if loaded is not None else None,
        "error": _load_error,
    }


def site_hooks() -> SteeringHooks:
    site_model()
    assert _hooks is not None
    return _hooks


def site_model_loaded() -> bool:
    return _loaded is not None and _loaded_key == (settings.STEERLAB_MODEL, settings.STEERLAB_DEVICE)


def site_vectors(vector_set) -> SteeringVectors:
    """The vectors of a ready `vector_set`, checked against the site model. Raises ValueError
    with a message when the file is missing or does not fit the model."""
    if not vector_set.file:
        raise ValueError(f"Vector set {vector_set.pk} has no vector file")
    key = (vector_set.pk, vector_set.file.name)
    with _lock:
        cached = _vectors.get(key)
    if cached is not None:
        return cached
    loaded = site_model()
    vectors = SteeringVectors.load(Path(vector_set.file.path))
    vectors.check_model(model_id=loaded.model_id, num_layers=loaded.num_layers, hidden_size=loaded.hidden_size)
    with _lock:
        _vectors[key] = vectors
    return vectors


def loaded_vector_sets() -> list[int]:
    with _lock:
        return sorted({pk for pk, _ in _vectors})


def site_generate(requests: Sequence[GenerationRequest]) -> list[str]:
    """Generate `requests` to completion together and return their texts (admin previews,
    calibration pairs). Chat goes through the inference service instead."""
    texts = [""] * len(requests)
    for event in stream_batch(site_model(), site_hooks(), requests):
        texts[event.index] += event.text
    return texts


def inference_queue_depth() -> dict[str, int]:
    """Waiting and running generations in this process's inference service (none before it starts)."""
    return {}
