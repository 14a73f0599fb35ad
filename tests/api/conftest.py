"""API fixtures: authenticated clients for the three users, and ready vector sets whose files
hold deterministic random vectors shaped for the site's model (no computation needed)."""

import pytest
import torch
from rest_framework.test import APIClient

from steering.engine import SteeringVectors
from steering.models import PreferenceDimension
from steering.serving.runtime import site_model_id
from steering.services import vector_sets

SMOLLM_LAYERS, SMOLLM_HIDDEN = 30, 576


def make_vectors(dims, *, model_id=None, hidden=SMOLLM_HIDDEN, layers=SMOLLM_LAYERS, seed=0, range_=0.02):
    generator = torch.Generator().manual_seed(seed)
    return SteeringVectors(
        model_id=model_id or site_model_id(),
        hidden_size=hidden,
        num_layers=layers,
        layers=list(range(layers // 4, 3 * layers // 4)),
        vectors={d: torch.randn(layers, hidden, generator=generator) for d in dims},
        residual_norms=torch.full((layers,), 10.0),
        functional_range={d: range_ for d in dims},
        labels={d: [f"{d}-low", f"{d}-high"] for d in dims},
    )


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def tiny_chat(client, **payload):
    """A short greedy REST chat: on the tiny site its text is noise, its fields are what count."""
    return client.post("/api/chat/", {"prompt": "hello world", "max_new_tokens": 6, "temperature": 0, **payload},
                       format="json")


@pytest.fixture
def as_alice(alice):
    return _client(alice)


@pytest.fixture
def as_bob(bob):
    return _client(bob)


@pytest.fixture
def as_charlie(charlie):
    return _client(charlie)


@pytest.fixture
def dimensions(db):
    for name in ("formality", "cost"):
        vector_sets.dimension_import_default(name=name)
    return list(PreferenceDimension.objects.filter(name__in=["formality", "cost"]))


@pytest.fixture
def shared_set(dimensions):
    """The site default: a ready, shared set with formality and cost."""
    return vector_sets.vector_set_register(vectors=make_vectors(["formality", "cost"]), name="shared")


@pytest.fixture
def alices_set(alice, dimensions):
    return vector_sets.vector_set_register(vectors=make_vectors(["formality"], seed=1), name="alice's", owner=alice)
