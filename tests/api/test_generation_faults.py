"""Whose fault a failed generation is, as REST and the websocket tell it, on the tiny site.

A generation that its own steering breaks (logits no longer finite) answers 422 with a message
(an error frame on the websocket) and leaves the others alone; a fault of the server answers
500 without its internals; a vector set whose file is missing or corrupt is marked unavailable
with a reason, makes health "degraded" naming it, and a steered request on it answers 503
without any path."""

import pytest
import torch
from asgiref.sync import sync_to_async
from django.test import Client
from rest_framework.test import APIClient

from steering.models import InteractionLog, VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors
from tests.tiny_models import NUM_LAYERS
from tests.ws.conftest import connect, frames_until_end

pytestmark = pytest.mark.django_db(transaction=True)

TINY_HIDDEN = 64


def _vectors(dims, **options):
    return make_vectors(dims, model_id=runtime.site_model_id(), hidden=TINY_HIDDEN, layers=NUM_LAYERS, **options)


@pytest.fixture
def shared(tiny_site, dimensions):
    return vector_sets.vector_set_register(vectors=_vectors(["formality", "cost"]), name="shared")


@pytest.fixture
def poisoned(tiny_site, alice):
    """A set whose additions overflow to inf: written before uploads were bounded, or by hand."""
    vectors = _vectors(["formality"], seed=2, range_=1e30).with_residual_norms(torch.full((NUM_LAYERS,), 1e30))
    return vector_sets.vector_set_register(vectors=vectors, name="poisoned", owner=alice)


def _chat(client, **payload):
    payload = {"prompt": "hello world", "max_new_tokens": 6, **payload}
    return client.post("/api/chat/", payload, format="json")


@pytest.fixture
def api(alice):
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 3}], ids=["greedy", "sampled"])
def test_a_generation_broken_by_its_own_steering_answers_422_with_a_message(api, shared, poisoned, sampling):
    plain = _chat(api, **sampling)
    assert plain.status_code == 200

    response = _chat(api, vector_set=poisoned.pk, preferences={"formality": 1.0}, **sampling)

    assert response.status_code == 422, response.json()
    body = response.json()
    assert body["code"] == "unprocessable" and "not finite" in body["detail"]
    assert InteractionLog.objects.get(vector_set=poisoned).status == InteractionLog.Status.FAILED
    again = _chat(api, **sampling)
    assert again.status_code == 200 and again.json()["generated_text"] == plain.json()["generated_text"]


class Boom:
    """A forward hook that raises, with a message full of internals, until removed."""

    SECRET = "/srv/steerlab/secret/path.py line 42"

    def __init__(self, layer):
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        raise RuntimeError(f"boom in {self.SECRET}")

    def remove(self):
        self._handle.remove()


def test_a_server_fault_answers_500_without_its_internals(api, shared):
    boom = Boom(runtime.site_model().layers[1])
    try:
        response = _chat(api)
    finally:
        boom.remove()
    assert response.status_code == 500
    assert response.json()["code"] == "generation_failed"
    assert "boom" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    assert "secret" not in InteractionLog.objects.get().error
    assert _chat(api).status_code == 200


async def test_the_websocket_sends_an_error_frame_for_a_generation_its_steering_breaks(alice, shared, poisoned):
    ws, connected, _ = await connect(alice)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": "hello", "max_new_tokens": 5, "vector_set": poisoned.pk,
                           "preferences": {"formality": 1.0}})
    frames = await frames_until_end(ws)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unprocessable"
    assert "not finite" in frames[-1]["message"]
    await ws.send_json_to({"type": "generate", "prompt": "hello", "max_new_tokens": 5})
    assert (await frames_until_end(ws))[-1]["type"] == "done"  # the socket stays open and usable
    await ws.disconnect()


def _break(vector_set, how):
    path = vector_set.file.path
    runtime.forget_vector_set(vector_set.pk)
    if how == "missing":
        vector_set.file.storage.delete(vector_set.file.name)
    else:
        with open(path, "wb") as out:
            out.write(b"\x00 this is not a safetensors file any more")


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_a_steered_request_on_a_set_with_a_broken_file_answers_503_without_paths(api, shared, settings, how):
    _break(shared, how)
    response = _chat(api, preferences={"formality": 0.5})
    assert response.status_code == 503, response.json()
    body = response.json()
    assert body["code"] == "vector_set_unavailable" and f"Vector set {shared.pk} is unavailable" in body["detail"]
    assert str(settings.MEDIA_ROOT) not in response.content.decode() and ".safetensors" not in body["detail"]
    shared.refresh_from_db()
    assert shared.status == VectorSet.Status.UNAVAILABLE
    assert ("missing" if how == "missing" else "corrupt") in shared.error
    assert str(settings.MEDIA_ROOT) not in shared.error
    # Out of use: it is no longer anyone's default, and naming it says why, still without paths.
    named = _chat(api, vector_set=shared.pk)
    assert named.status_code == 503 and named.json()["code"] == "vector_set_unavailable"
    assert str(settings.MEDIA_ROOT) not in named.content.decode()
    assert _chat(api).status_code == 400  # no default set is ready any more


def test_health_says_degraded_naming_a_set_whose_file_is_missing(shared, charlie, settings):
    staff = Client()
    staff.force_login(charlie)
    runtime.site_model()
    healthy = staff.get("/api/health/")
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
    assert healthy.json()["vector_sets_unavailable"] == []

    _break(shared, "missing")
    response = staff.get("/api/health/")

    assert response.status_code == 200  # the server still answers everyone else
    report = response.json()
    assert report["status"] == "degraded"
    assert report["vector_sets_unavailable"] == [{"id": shared.pk, "name": "shared", "reason": "its vector file is missing"}]
    assert str(settings.MEDIA_ROOT) not in response.content.decode()
    shared.refresh_from_db()
    assert shared.status == VectorSet.Status.UNAVAILABLE

