import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from steering.engine import SteeringVectors
from steering.engine.loading import EMBEDDED_MODEL_ID
from steering.engine.range_search import RANGE_CANDIDATES
from steering.models import VectorSet

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_it_creates_the_demo_account_and_the_default_vector_set_once(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.STEERLAB_DEMO_ACCOUNT = True  # as under DEBUG=1
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "demo / steerlab-demo" in out.getvalue()
    demo = get_user_model().objects.get(username="demo")
    assert demo.check_password("steerlab-demo")
    vector_set = VectorSet.objects.get(owner=None)
    assert vector_set.status == VectorSet.Status.READY and vector_set.model_id == EMBEDDED_MODEL_ID
    vectors = SteeringVectors.load(tmp_path / vector_set.file.name)
    vectors.check_model(model_id=EMBEDDED_MODEL_ID, num_layers=30, hidden_size=576)
    assert sorted(vectors.dimensions) == ["age", "ambiance", "cost", "culture", "formality", "time"]
    assert vectors.labels["cost"] == ["Budget", "Luxury"]
    # Each dimension's functional range was measured (one of the search's candidates), and the
    # row and the file agree: generation reads it from the file.
    assert vectors.functional_range == vector_set.functional_range
    assert set(vectors.functional_range) == set(vectors.dimensions)
    assert all(value in RANGE_CANDIDATES for value in vectors.functional_range.values())

    again = io.StringIO()
    call_command("bootstrap", stdout=again)
    assert "Default vector set ready" in again.getvalue()
    assert VectorSet.objects.count() == 1
    assert get_user_model().objects.filter(username="demo").count() == 1
