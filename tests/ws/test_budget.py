"""One chat budget per user, shared by REST chat, websocket generate frames and LEARN feedback:
a generate/cancel loop cannot create unlimited log rows, nor feedback queue unlimited tasks.
A refused frame gets an error frame with retry_after, and the socket stays open."""

import pytest
from asgiref.sync import sync_to_async
from rest_framework.test import APIClient

from ops.throttling import Budget
from steering.models import Feedback, InteractionLog
from steering.services import chat
from tests.ws.conftest import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _chat_rate(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "chat": "2/hour"},
    }


def feedback(user):
    interaction = chat.interaction_record(
        user=user, prompt="Where to eat?", response="Anywhere.", status="ok", vector_set=None, strengths={},
        params={}, tokens=1, latency_ms=1, source=InteractionLog.Source.API,
    )
    client = APIClient()
    client.force_authenticate(user)
    return client.post(f"/api/interactions/{interaction.pk}/feedback/", {"thumbs": -1}, format="json")


async def test_a_refused_generate_frame_gets_retry_after_and_the_socket_stays_open(alice):
    for _ in range(2):
        await sync_to_async(Budget("chat").take)("user", alice.pk)  # spent elsewhere (REST)
    ws, connected, _ = await connect(alice)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": "Hello", "tag": "t1"})
    frame = await ws.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "too_many" and frame["tag"] == "t1"
    assert 0 < frame["retry_after"] <= 3600 and "Try again in" in frame["message"]
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=10))["type"] == "pong"
    assert not await sync_to_async(InteractionLog.objects.exists)()
    await ws.disconnect()


async def test_websocket_frames_spend_the_budget_rest_feedback_reads(alice, bob):
    ws, connected, _ = await connect(alice)
    assert connected
    # Two frames refused before generation (no vector set): each still spends the budget.
    for _ in range(2):
        await ws.send_json_to({"type": "generate", "prompt": "Hello", "vector_set": 999999})
        frame = await ws.receive_json_from(timeout=60)
        assert frame["code"] != "too_many", frame
    await ws.disconnect()
    response = await sync_to_async(feedback)(alice)
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert not await sync_to_async(Feedback.objects.exists)()
    assert (await sync_to_async(feedback)(bob)).status_code == 201  # bob has his own budget


def test_feedback_spends_the_chat_budget(alice):
    assert feedback(alice).status_code == 201
    assert feedback(alice).status_code == 201
    response = feedback(alice)
    assert response.status_code == 429 and "Retry-After" in response
    assert Feedback.objects.count() == 2
