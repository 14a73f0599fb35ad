"""django-q2 task entry points: fetch by id, call a service."""

from __future__ import annotations

from steering import services
from steering.models import VectorSet
from steering.runtime import site_model


def compute_vector_set(vector_set_id: int) -> str:
    vector_set = VectorSet.objects.get(pk=vector_set_id)
    # The model loads here, in the worker, never in the cluster's parent before it forks.
    vector_set = services.vector_set_compute(vector_set=vector_set, loaded=site_model())
    return vector_set.status


def compute_vector_set_finished(task) -> None:
    """django-q2 hook, run by the cluster's monitor whatever became of the task."""
    services.vector_set_task_finished(vector_set_id=task.args[0], success=task.success, result=task.result)
