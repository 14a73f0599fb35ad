"""The vector computation task end to end, through django-q2, on a tiny model that the site
loads from a local directory as it would any model named by STEERLAB_MODEL."""

import pytest
from django_q.models import Task
from django_q.tasks import async_task
from django_q.timeout import TimeoutHandler
from django_q.exceptions import TimeoutException

from steering import tasks
from steering.models import PreferenceDimension, VectorSet
from steering.services import vector_sets
from tests.tiny_models import CORPUS

pytestmark = pytest.mark.django_db


@pytest.fixture
def dimension():
    return PreferenceDimension.objects.create(
        name="formality", negative_label="Casual", positive_label="Formal",
        positive_examples=CORPUS[0::2], negative_examples=CORPUS[1::2],
    )


def _files(settings):
    return [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()] if settings.MEDIA_ROOT.exists() else []


def test_the_task_computes_a_ready_set_through_the_queue(tiny_site, dimension, settings):
    vector_set = vector_sets.vector_set_create(name="t", model_id=str(tiny_site), dimensions=[dimension])
    task_id = async_task("steering.tasks.compute_vector_set", vector_set.pk,
                         hook="steering.tasks.compute_vector_set_finished", sync=True)
    vector_set.refresh_from_db()
    assert vector_set.status == "ready" and vector_set.progress == 100, vector_set.error
    assert Task.objects.get(id=task_id).success
    assert [p.name for p in _files(settings)] == [vector_set.file.name.split("/")[-1]]


def test_a_failing_task_leaves_failed_with_the_reason_and_no_file(tiny_site, settings):
    empty = PreferenceDimension.objects.create(name="empty", negative_label="A", positive_label="B")
    vector_set = vector_sets.vector_set_create(name="t", model_id=str(tiny_site), dimensions=[empty])
    async_task("steering.tasks.compute_vector_set", vector_set.pk, sync=True)
    vector_set.refresh_from_db()
    assert vector_set.status == "failed" and "no training examples" in vector_set.error
    assert _files(settings) == []


def test_a_timeout_leaves_failed_and_no_file(tiny_site, settings, timeout_never_lost):
    # Enough text that extraction on the tiny model outlasts a one-second timeout.
    big = PreferenceDimension.objects.create(
        name="big", negative_label="A", positive_label="B",
        positive_examples=[" ".join(CORPUS)] * 3000, negative_examples=[" ".join(CORPUS[::-1])] * 3000,
    )
    vector_set = vector_sets.vector_set_create(name="t", model_id=str(tiny_site), dimensions=[big])
    from steering.serving.runtime import site_model

    loaded = site_model()
    with pytest.raises(TimeoutException), TimeoutHandler(1):  # what a django-q2 worker wraps a task in
        vector_sets.vector_set_compute(vector_set=vector_set, loaded=loaded)
    vector_set.refresh_from_db()
    assert vector_set.status == "failed" and "timeout" in vector_set.error
    assert not vector_set.file and _files(settings) == []


def test_the_hook_marks_a_set_abandoned_by_the_cluster_as_failed(tiny_site, dimension):
    vector_set = vector_sets.vector_set_create(name="t", model_id=str(tiny_site), dimensions=[dimension])
    VectorSet.objects.filter(pk=vector_set.pk).update(status="running")
    tasks.compute_vector_set_finished(Task(args=(vector_set.pk,), success=False, result="worker killed"))
    vector_set.refresh_from_db()
    assert vector_set.status == "failed" and "worker killed" in vector_set.error
    ready = vector_sets.vector_set_create(name="r", model_id=str(tiny_site), dimensions=[dimension])
    VectorSet.objects.filter(pk=ready.pk).update(status="ready")
    tasks.compute_vector_set_finished(Task(args=(ready.pk,), success=False, result="late"))
    ready.refresh_from_db()
    assert ready.status == "ready"  # a finished set is never overwritten


def test_a_computed_set_carries_conditions_for_dimensions_with_on_topic_questions(tiny_site, dimension):
    from steering.serving.runtime import site_vectors

    cost = vector_sets.dimension_import_default(name="cost")  # the shipped questions about spending
    dimension.condition_prompts = ["Write me a letter to my landlord.", "Draft an email to my manager."]
    dimension.save()
    plain = PreferenceDimension.objects.create(
        name="plain", negative_label="A", positive_label="B",
        positive_examples=CORPUS[0::2], negative_examples=CORPUS[1::2],
    )
    vector_set = vector_sets.vector_set_create(name="t", model_id=str(tiny_site), dimensions=[dimension, cost, plain])
    async_task("steering.tasks.compute_vector_set", vector_set.pk, sync=True)
    vector_set.refresh_from_db()
    assert vector_set.status == "ready", vector_set.error
    vectors = site_vectors(vector_set)
    assert sorted(vectors.conditions) == ["cost", "formality"]  # "plain" has no questions: it always applies
    layer = vectors.condition_report["layer"]
    assert all(c.layer == layer for c in vectors.conditions.values())
    assert set(vectors.condition_report["accuracy"]) == {"cost", "formality"}
