import pytest

from steering.engine import SteeringVectors
from steering.models import VectorSet
from steering.serving.runtime import site_model_id
from steering.services import vector_sets

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_the_compute_task_runs_for_real_after_commit(settings, tmp_path, django_capture_on_commit_callbacks):
    settings.MEDIA_ROOT = tmp_path
    formality = vector_sets.dimension_import_default(name="formality")
    vector_set = vector_sets.vector_set_create(name="f", model_id=site_model_id(), dimensions=[formality])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        vector_sets.vector_set_enqueue(vector_set=vector_set, sync=True)
    vector_set.refresh_from_db()
    assert vector_set.status == VectorSet.Status.PENDING  # nothing runs before the commit
    for callback in callbacks:
        callback()
    vector_set.refresh_from_db()
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    assert SteeringVectors.load(tmp_path / vector_set.file.name).model_id == site_model_id()
