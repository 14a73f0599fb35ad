import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from steering.models import Conversation, InteractionLog, Message
from tests.ws.conftest import connect, frames_until_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


async def test_it_refuses_anonymous_users(steerable):
    _, connected, code = await connect(None)
    assert connected is False and code == 4401


async def test_it_refuses_another_origin(steerable, alice):
    _, connected, _ = await connect(alice, origin=b"https://evil.example")
    assert connected is False


async def test_it_streams_start_tokens_done_and_logs_the_turn(steerable, alice):
    ws, connected, _ = await connect(alice)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": "Say hello to a colleague.", "max_new_tokens": 16,
                           "preferences": {"formality": 0.8}, "new_conversation": True})
    frames = await frames_until_end(ws)
    start, *tokens, done = frames
    assert start["type"] == "start" and start["preferences_applied"] == {"formality": 0.8}
    assert tokens and all(f["type"] == "token" and f["request_id"] == start["request_id"] for f in tokens)
    assert done["type"] == "done" and done["text"] == "".join(f["text"] for f in tokens)
    assert done["stats"]["tokens"] >= len(tokens) and done["stats"]["finish_reason"] in ("stop", "length")
    log = await sync_to_async(InteractionLog.objects.get)(pk=done["stats"]["interaction_id"])
    assert (log.user_id, log.response, log.status, log.source) == (alice.pk, done["text"], "ok", "ws")
    assert log.strengths == {"formality": 0.8}
    conversation = await sync_to_async(Conversation.objects.get)(pk=start["conversation_id"])
    roles = await sync_to_async(lambda: list(conversation.messages.values_list("role", flat=True)))()
    assert roles == ["user", "assistant"]
    await ws.disconnect()


async def test_tokens_go_out_one_frame_per_interval_and_the_answer_is_the_same(steerable, alice, settings):
    """STEERLAB_STREAM_INTERVAL_MS joins the tokens that arrive within it into one frame: the
    same answer in fewer frames, no more than one per interval after the first."""
    ws, connected, _ = await connect(alice)
    assert connected
    answers = {}
    for interval in (0, 300):
        settings.STEERLAB_STREAM_INTERVAL_MS = interval
        await ws.send_json_to({"type": "generate", "prompt": "Describe a good morning routine.", "max_new_tokens": 40,
                               "temperature": 0})
        started = asyncio.get_running_loop().time()
        start, *tokens, done = await frames_until_end(ws)
        elapsed = asyncio.get_running_loop().time() - started
        assert done["type"] == "done" and done["text"] == "".join(f["text"] for f in tokens)
        answers[interval] = (done["text"], len(tokens), done["stats"]["tokens"], elapsed)
    (every, frames_every, tokens_every, _), (joined, frames_joined, _, elapsed) = answers[0], answers[300]
    assert joined == every and tokens_every == 40
    assert frames_every >= 30  # a frame per token (a few hold part of a character or nothing)
    assert frames_joined <= 2 + elapsed / 0.3 and frames_joined < frames_every / 2
    await ws.disconnect()


@pytest.mark.parametrize(
    "frame, code, words",
    [
        ("not json", "bad_json", "json"),
        ("[1, 2]", "bad_frame", "object"),
        (json.dumps({"type": "dance"}), "unknown_type", "dance"),
        (json.dumps({"type": "generate"}), "invalid", "prompt"),
        (json.dumps({"type": "generate", "prompt": "x" * 5000}), "invalid", "prompt"),
        (json.dumps({"type": "generate", "prompt": "hi", "max_new_tokens": 0}), "invalid", "max_new_tokens"),
        (json.dumps({"type": "generate", "prompt": "hi", "preferences": {"formality": 2}}), "invalid", "formality"),
        (json.dumps({"type": "generate", "prompt": "hi", "preferences": {"sarcasm": 1}}), "bad_request", "sarcasm"),
        (json.dumps({"type": "generate", "prompt": "hi", "temperature": "hot"}), "invalid", "temperature"),
        (json.dumps({"type": "cancel", "request_id": "nope"}), "not_found", "nope"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(steerable, alice, frame, code, words):
    ws, _, _ = await connect(alice)
    await ws.send_to(text_data=frame)
    error = await ws.receive_json_from(timeout=30)
    assert error["type"] == "error" and error["code"] == code, error
    assert words in error["message"].lower()
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await ws.disconnect()


async def test_cancel_stops_the_answer_and_logs_it_cancelled(steerable, alice):
    ws, _, _ = await connect(alice)
    await ws.send_json_to({"type": "generate", "prompt": "Tell me a long story about a lighthouse.",
                           "max_new_tokens": 400})
    start = await ws.receive_json_from(timeout=60)
    await ws.receive_json_from(timeout=60)  # a first token
    await ws.send_json_to({"type": "cancel", "request_id": start["request_id"]})
    frames = await frames_until_end(ws)
    done = frames[-1]
    assert done["type"] == "done" and done["stats"]["finish_reason"] == "cancelled"
    assert done["stats"]["tokens"] < 400
    log = await sync_to_async(InteractionLog.objects.get)(pk=done["stats"]["interaction_id"])
    assert log.status == "cancelled"
    await ws.disconnect()


async def test_a_closed_socket_frees_its_generation(steerable, alice):
    from steering.serving import runtime

    ws, _, _ = await connect(alice)
    await ws.send_json_to({"type": "generate", "prompt": "Write a long essay on rivers.", "max_new_tokens": 400})
    await ws.receive_json_from(timeout=60)
    await ws.receive_json_from(timeout=60)
    await ws.disconnect()
    for _ in range(100):
        if runtime.inference_queue_depth().get("active", 0) == 0:
            break
        await asyncio.sleep(0.1)
    assert runtime.inference_queue_depth().get("active", 0) == 0
    log = await sync_to_async(InteractionLog.objects.get)(user=alice)
    assert log.status == "cancelled" and log.tokens < 400


async def test_a_conversation_of_another_user_is_not_found(steerable, alice, bob):
    conversation = await sync_to_async(Conversation.objects.create)(user=alice, title="mine")
    ws, _, _ = await connect(bob)
    await ws.send_json_to({"type": "generate", "prompt": "hi", "conversation_id": conversation.pk})
    error = await ws.receive_json_from(timeout=30)
    assert error["code"] == "not_found"
    assert await sync_to_async(Message.objects.count)() == 0
    await ws.disconnect()


async def test_calibration_answers_are_logged_as_such_and_never_join_a_conversation(steerable, alice):
    ws, connected, _ = await connect(alice)
    assert connected
    for tag, strength in (("a", -1.0), ("b", 1.0)):
        await ws.send_json_to({"type": "generate", "purpose": "calibrate", "tag": tag, "prompt": "Greet a guest.",
                               "max_new_tokens": 8, "preferences": {"formality": strength},
                               "new_conversation": True})
    done = {}
    while len(done) < 2:
        frame = await ws.receive_json_from(timeout=120)
        assert frame["type"] != "error", frame
        if frame["type"] == "start":
            assert frame["conversation_id"] is None
        if frame["type"] == "done":
            done[frame["tag"]] = frame
    logs = await sync_to_async(lambda: list(InteractionLog.objects.filter(
        pk__in=[f["stats"]["interaction_id"] for f in done.values()]).values_list("source", "conversation_id")))()
    assert logs == [("calibrate", None), ("calibrate", None)]
    assert not await sync_to_async(Conversation.objects.exists)()
    await ws.disconnect()


async def test_a_generation_past_the_sockets_limit_is_refused_with_retry_after(steerable, alice, settings):
    settings.STEERLAB_MAX_PER_USER = 1
    ws, _, _ = await connect(alice)
    await ws.send_json_to({"type": "generate", "prompt": "Write a long essay on rivers.", "max_new_tokens": 400})
    start = await ws.receive_json_from(timeout=60)
    await ws.send_json_to({"type": "generate", "prompt": "And one on lakes.", "tag": "second"})
    frame = await ws.receive_json_from(timeout=60)
    while frame["type"] == "token":  # the first answer streams meanwhile
        frame = await ws.receive_json_from(timeout=60)
    assert frame["type"] == "error" and frame["code"] == "too_many" and frame["tag"] == "second", frame
    assert isinstance(frame["retry_after"], int) and frame["retry_after"] > 0, frame
    await ws.send_json_to({"type": "cancel", "request_id": start["request_id"]})
    assert (await frames_until_end(ws))[-1]["stats"]["finish_reason"] == "cancelled"
    await ws.disconnect()
