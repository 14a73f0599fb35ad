"""The readout through the doors, on the tiny site: REST's answer, the interaction log (and the
interactions API), the websocket's done frame; /v1's extension field is in
tests/openai/test_readout.py."""

import math

import pytest
import torch

from steering.engine.readout import ReadoutEnds
from steering.models import InteractionLog
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import make_vectors, tiny_chat as _chat
from tests.tiny_models import NUM_LAYERS
from tests.ws.conftest import connect, frames_until_end

pytestmark = pytest.mark.django_db(transaction=True)

TINY_HIDDEN = 64


def readout_vectors(*, ends: bool = True):
    """formality and cost on the tiny model, with reference ends at layer 1 (or none: a set
    computed before the readout)."""
    vectors = make_vectors(["formality", "cost"], model_id=runtime.site_model_id(), hidden=TINY_HIDDEN,
                           layers=NUM_LAYERS, range_=0.5)
    if not ends:
        return vectors
    g = torch.Generator().manual_seed(7)
    return vectors.with_readout({
        dim: ReadoutEnds(1, torch.randn(TINY_HIDDEN, generator=g), torch.randn(TINY_HIDDEN, generator=g))
        for dim in ("formality", "cost")
    })


@pytest.fixture
def readout_set(tiny_site, dimensions):
    return vector_sets.vector_set_register(vectors=readout_vectors(), name="shared")


def _check(readout, tokens):
    assert readout["dimensions"] == ["formality", "cost"]
    assert len(readout["tokens"]) == tokens and all(len(values) == 2 for values in readout["tokens"])
    for i, dim in enumerate(readout["dimensions"]):
        column = [values[i] for values in readout["tokens"]]
        assert math.isfinite(readout["mean"][dim])
        assert readout["mean"][dim] == pytest.approx(sum(column) / len(column), abs=2e-3)


def test_a_steered_answer_and_an_unsteered_one_both_come_with_their_readout(as_alice, readout_set):
    steered = _chat(as_alice, preferences={"formality": 1.0}).json()
    plain = _chat(as_alice).json()
    _check(steered["readout"], steered["tokens"])
    _check(plain["readout"], plain["tokens"])
    assert steered["readout"]["tokens"] != plain["readout"]["tokens"]


def test_the_readout_is_logged_with_the_interaction_and_listed_to_its_owner_only(as_alice, readout_set, as_bob):
    answer = _chat(as_alice, preferences={"cost": -1.0}).json()
    logged = InteractionLog.objects.get(pk=answer["interaction_id"])
    assert logged.readout == answer["readout"] and logged.strengths == {"cost": -1.0}
    listed = as_alice.get("/api/interactions/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert rows[0]["readout"] == answer["readout"]
    listed = as_bob.get("/api/interactions/").json()
    assert not (listed["results"] if isinstance(listed, dict) else listed)


def test_a_set_computed_before_the_readout_answers_with_a_null_readout(as_alice, tiny_site, dimensions):
    vector_sets.vector_set_register(vectors=readout_vectors(ends=False), name="shared")
    answer = _chat(as_alice, preferences={"formality": 1.0})
    assert answer.status_code == 200 and answer.json()["readout"] is None


async def test_the_websocket_done_frame_carries_the_readout(readout_set, alice):
    communicator, connected, _ = await connect(alice)
    assert connected
    await communicator.send_json_to({"type": "generate", "prompt": "hello world", "max_new_tokens": 4,
                                     "temperature": 0, "preferences": {"formality": 0.5}})
    done = (await frames_until_end(communicator))[-1]
    assert done["type"] == "done", done
    _check(done["readout"], done["stats"]["tokens"])
    await communicator.disconnect()
