"""The websocket door and the vector set a user chose (issue 27, item 10): a generate frame that
names no set steers with the chosen one, in a new conversation and in one started with another
set (the sliders the page shows are the chosen set's)."""

import pytest
from asgiref.sync import sync_to_async

from steering.models import PreferenceDimension
from steering.services import chat, profiles, vector_sets
from tests.api.conftest import make_vectors
from tests.ws.conftest import connect, frames_until_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _cost_set():
    PreferenceDimension.objects.create(name="cost", negative_label="Budget", positive_label="Luxury")
    return vector_sets.vector_set_register(vectors=make_vectors(["cost"], seed=4), name="cost only")


async def test_a_frame_naming_no_set_steers_with_the_chosen_one(steerable, alice):
    cost = await sync_to_async(_cost_set)()
    earlier = await sync_to_async(chat.conversation_start)(user=alice, first_prompt="Dinner", vector_set=steerable)
    await sync_to_async(profiles.profile_choose)(user=alice, vector_set_id=cost.pk)
    ws, connected, _ = await connect(alice)
    assert connected
    for where in ({"new_conversation": True}, {"conversation_id": earlier.pk}):
        await ws.send_json_to({"type": "generate", "prompt": "Where should we eat?", "max_new_tokens": 4,
                               "preferences": {"cost": -0.5}, **where})
        start, *_, done = await frames_until_end(ws)
        assert start["vector_set"] == cost.pk and start["preferences_applied"] == {"cost": -0.5}, where
        assert done["type"] == "done"
    await ws.disconnect()
