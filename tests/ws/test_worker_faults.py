"""The Redis worker mode: a worker that dies mid-generation, and one that comes back."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from steering.models import InteractionLog
from tests.ws.conftest import WorkerThread, connect, frames_until_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def worker_mode(settings, steerable, inference_mode):
    if inference_mode != "worker":
        pytest.skip("about the separate worker process")


async def test_a_dead_worker_gives_an_error_frame_and_a_failed_log_then_service_resumes(worker_mode, alice):
    ws, _, _ = await connect(alice)
    await ws.send_json_to({"type": "generate", "prompt": "Describe the sea at length.", "max_new_tokens": 400})
    start = await ws.receive_json_from(timeout=60)
    assert start["type"] == "start"
    await ws.receive_json_from(timeout=60)  # a token: the worker is generating
    loop = asyncio.get_running_loop()
    # Kill every running worker (the fixture's): its requests go silent.
    from tests.ws import conftest

    for worker in list(conftest.RUNNING_WORKERS):
        await loop.run_in_executor(None, worker.kill)
    killed_at = loop.time()
    frames = await frames_until_end(ws, timeout=30)
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "worker_unavailable"
    assert loop.time() - killed_at < 10
    log = await sync_to_async(InteractionLog.objects.get)(user=alice)
    assert log.status == "failed" and "did not answer" in log.error

    replacement = await loop.run_in_executor(None, lambda: WorkerThread().start())
    try:
        await ws.send_json_to({"type": "generate", "prompt": "Say hi.", "max_new_tokens": 8})
        frames = await frames_until_end(ws, timeout=120)
        assert frames[-1]["type"] == "done", frames[-1]
    finally:
        await loop.run_in_executor(None, replacement.kill)
        await ws.disconnect()
