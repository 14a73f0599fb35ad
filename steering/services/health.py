"""Health: whether the database, the queue, the model and the vector files are usable."""

from __future__ import annotations

import logging

from steering.models import VectorSet
from steering.services.vector_sets import vector_set_mark_unavailable
from steering.serving import runtime

log = logging.getLogger(__name__)


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
