"""django-q2 task entry points: fetch by id, call a service."""

from __future__ import annotations

from steering.engine import ModelNotFound
from steering.models import Evaluation, Feedback, VectorSet
from steering.serving.runtime import site_model
from steering.services import evaluations, feedback, jobs, vector_sets


def compute_vector_set(vector_set_id: int) -> str:
    vector_set = VectorSet.objects.filter(pk=vector_set_id).first()
    if vector_set is None:
        return "deleted"  # deleted while it waited in the queue: nothing to do, nothing to fail
    # The model loads here, in the worker, never in the cluster's parent before it forks.
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=site_model())
    return vector_set.status


def compute_vector_set_finished(task) -> None:
    """django-q2 hook, run by the cluster's monitor whatever became of the task."""
    jobs.task_finished(VectorSet, task)


def learn_from_feedback(feedback_id: int) -> str:
    given = Feedback.objects.select_related("interaction__vector_set", "user").get(pk=feedback_id)
    try:
        # The sentence-embedding model loads here, in the worker, once per process.
        feedback.learn_apply(feedback=given)
    except ModelNotFound as exc:
        # Retrying cannot help a missing model: say so on the feedback now.
        feedback.learn_failed(feedback_id=feedback_id, result=str(exc))
    given.refresh_from_db(fields=["learn_status"])
    return given.learn_status


def learn_from_feedback_finished(task) -> None:
    if not task.success:
        feedback.learn_failed(feedback_id=task.args[0], result=str(task.result))


def run_evaluation(evaluation_id: int) -> str:
    run = Evaluation.objects.select_related("vector_set").get(pk=evaluation_id)
    return evaluations.evaluation_run(evaluation=run).status


def run_evaluation_finished(task) -> None:
    jobs.task_finished(Evaluation, task)
