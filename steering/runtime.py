"""The site's one shared model, loaded lazily once per process.

Lazily, because django-q2 forks its workers from the cluster process: a model (and CUDA)
initialised before the fork would be shared badly, so each process loads on first use."""

from __future__ import annotations

import threading

from django.conf import settings

from steering.engine import LoadedModel, load_model
from steering.engine.models import model_id_for

_lock = threading.Lock()
_loaded: LoadedModel | None = None


def site_model_id() -> str:
    return model_id_for(settings.STEERLAB_MODEL)


def site_model() -> LoadedModel:
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = load_model(settings.STEERLAB_MODEL, device=settings.STEERLAB_DEVICE)
        return _loaded
