"""/ws/chat/ with three users: only logged-in users from an allowed origin get a socket, and
bob's socket never reaches alice's conversations, vector sets, profile or generations. Runs
on the tiny site model, so every generation takes milliseconds."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from steering.chat.native import GENERATION_FIELDS
from steering.models import InteractionLog, Message
from steerlab_site.asgi import application
from tests.security.conftest import SECRET, alices_data_snapshot, hostile_fields
from tests.ws.conftest import connect, frames_until_end

pytestmark = pytest.mark.django_db(transaction=True)


async def refused(headers) -> tuple[bool, int | None]:
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect(timeout=10)
    return connected, code


async def test_anonymous_users_are_refused_as_unauthorised(world):
    _, connected, code = await connect(None)
    assert connected is False and code == 4401


async def test_a_stale_session_cookie_is_refused(world):
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", b"sessionid=not-a-session")]
    assert await refused(headers) == (False, 4401)


@pytest.mark.parametrize("origin", [b"https://evil.example", b"http://testserver.evil.example", b"null"])
async def test_a_foreign_origin_is_refused_even_with_alices_session(world, origin):
    _, connected, _ = await connect(world.alice, origin=origin)
    assert connected is False


async def test_a_handshake_without_origin_is_refused(world):
    from tests.ws.conftest import session_cookie

    cookie = await sync_to_async(session_cookie)(world.alice)
    connected, _ = await refused([(b"host", b"testserver"), (b"cookie", cookie)])
    assert connected is False


async def bob_asks(world, **frame) -> dict:
    ws, connected, _ = await connect(world.bob)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": "hello", "max_new_tokens": 2, **frame})
    reply = await ws.receive_json_from(timeout=30)
    await ws.disconnect()
    return reply


@pytest.mark.parametrize("field", ["conversation_id", "vector_set"])
async def test_bob_cannot_chat_in_alices_conversation_or_with_her_set(world, field):
    before = await sync_to_async(alices_data_snapshot)(world)
    target = world.conversation.pk if field == "conversation_id" else world.private.pk
    reply = await bob_asks(world, **{field: target})
    assert reply["type"] == "error" and reply["code"] == "not_found"
    assert SECRET not in str(reply)
    assert await sync_to_async(alices_data_snapshot)(world) == before
    assert not await sync_to_async(InteractionLog.objects.filter(user=world.bob).exists)()


async def test_bobs_socket_steers_with_his_profile_never_alices(world):
    ws, _, _ = await connect(world.bob)
    await ws.send_json_to({"type": "generate", "prompt": "hello", "max_new_tokens": 2, "new_conversation": True})
    start, *_, done = await frames_until_end(ws, timeout=60)
    await ws.disconnect()
    assert done["type"] == "done", done
    assert start["preferences_applied"] == {} and start["vector_set"] == world.shared.pk  # alice has formality 0.9
    log = await sync_to_async(InteractionLog.objects.get)(user=world.bob)
    assert log.strengths == {} and log.conversation_id != world.conversation.pk
    assert await sync_to_async(Message.objects.filter(conversation=world.conversation).count)() == 2


async def test_bob_cannot_cancel_alices_generation(world):
    alice, _, _ = await connect(world.alice)
    bob, _, _ = await connect(world.bob)
    await alice.send_json_to({"type": "generate", "prompt": "Tell me a story.", "max_new_tokens": 40})
    start = await alice.receive_json_from(timeout=30)
    await bob.send_json_to({"type": "cancel", "request_id": start["request_id"]})
    reply = await bob.receive_json_from(timeout=10)
    assert reply["type"] == "error" and reply["code"] == "not_found"
    frames = await frames_until_end(alice, timeout=60)
    assert frames[-1]["type"] == "done" and frames[-1]["stats"]["finish_reason"] != "cancelled"
    await alice.disconnect()
    await bob.disconnect()


async def test_a_generate_frame_cannot_choose_the_model_a_path_or_code(world, tmp_path, settings):
    model = settings.STEERLAB_MODEL
    ws, _, _ = await connect(world.alice)
    await ws.send_json_to({**hostile_fields(tmp_path), "type": "generate", "prompt": "hello", "max_new_tokens": 2})
    frames = await frames_until_end(ws, timeout=60)
    await ws.disconnect()
    assert frames[-1]["type"] == "done", frames[-1]
    assert not (tmp_path / "hostile").exists() and settings.STEERLAB_MODEL == model
    log = await sync_to_async(InteractionLog.objects.get)(pk=frames[-1]["stats"]["interaction_id"])
    assert set(log.params) <= set(GENERATION_FIELDS)


@pytest.mark.parametrize("request_id", [{"a": 1}, [1, 2], 5])
async def test_a_cancel_naming_no_string_is_refused_and_the_socket_stays(world, request_id):
    # An unhashable id once crashed the consumer on its dictionary lookup.
    ws, _, _ = await connect(world.alice)
    await ws.send_json_to({"type": "cancel", "request_id": request_id})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "error" and reply["code"] == "invalid" and "request_id" in reply["message"]
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=10) == {"type": "pong"}
    await ws.disconnect()
