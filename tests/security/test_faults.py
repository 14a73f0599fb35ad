"""Faults, each followed by recovery: the database going away under /api/health/, a REST or
websocket client leaving mid-answer, the inference worker dying mid-generation, a vector
computation that fails or runs out of time. After each, whatever was committed is still there
and nothing is half-written: every interaction has a final status, every conversation holds
whole turns, every vector set's file exists and no file is orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator
from django.db import connection
from django_q.exceptions import TimeoutException
from django_q.timeout import TimeoutHandler
from rest_framework.authtoken.models import Token

from steering.models import Conversation, InteractionLog, Message, PreferenceDimension, VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from steerlab_site.asgi import application
from tests.tiny_models import CORPUS, slowed_forward
from tests.ws.conftest import WorkerThread, connect, frames_until_end, inference_mode  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

# As long as fits the tiny model's 256-token context beside the prompt: it is still streaming when
# the test cuts it.
LONG = {"prompt": "Tell me a very long story.", "max_new_tokens": 200}


def assert_nothing_half_written() -> None:
    """Every interaction ended (ok, cancelled or failed), and each conversation is a sequence
    of whole turns: one user message per logged interaction, each assistant message tied to
    an interaction of the same conversation."""
    assert set(InteractionLog.objects.values_list("status", flat=True)) <= {"ok", "cancelled", "failed"}
    for conversation in Conversation.objects.all():
        messages = list(conversation.messages.all())
        turns = InteractionLog.objects.filter(conversation=conversation)
        assert sum(m.role == "user" for m in messages) == turns.count(), conversation
        for message in messages:
            if message.role == "assistant":
                assert message.interaction is not None and message.interaction.conversation_id == conversation.pk
    assert not Message.objects.filter(role="assistant", interaction__isnull=True).exists()


async def wait_until(condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await sync_to_async(condition)():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def generating() -> bool:
    return runtime.inference_queue_depth().get("active", 0) > 0


# -- the database ---------------------------------------------------------------------------------


@contextlib.contextmanager
def database_down():
    """Point the connection at a database that cannot be opened (a missing directory for
    SQLite, a missing database for PostgreSQL): every query fails as in an outage."""
    saved = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = (
        "/nonexistent-steerlab-dir/db.sqlite3" if connection.vendor == "sqlite" else "steerlab_no_such_database"
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = saved


def test_health_answers_503_while_the_database_is_down_and_200_once_it_is_back(tiny_site, client, alice, settings):
    runtime.site_model()
    # The details are the metrics token's (a session would need the database that goes down).
    settings.METRICS_TOKEN = "scraper-secret-0123456789"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scraper-secret-0123456789"
    assert client.get("/api/health/").status_code == 200
    with database_down():
        response = client.get("/api/health/")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "error" and body["database"] == "unavailable: OperationalError"
        assert body["model_loaded"] is True  # the rest of the report still comes
    response = client.get("/api/health/")
    assert response.status_code == 200 and response.json()["database"] == "ok"
    assert type(alice).objects.filter(pk=alice.pk).exists()  # what was committed is still there


def test_health_answers_loading_at_once_while_the_model_loads(tiny_site, settings, client):
    import threading
    import time

    settings.STEERLAB_MODEL = str(tiny_site) + "/"  # the same model under a key not loaded yet
    loading, release = threading.Event(), threading.Event()

    def slow_load():  # what the loading thread does: hold the site's lock for the whole load
        with runtime._lock:
            loading.set()
            release.wait(10)

    holder = threading.Thread(target=slow_load)
    holder.start()
    try:
        assert loading.wait(5)
        started = time.monotonic()
        response = client.get("/api/health/")
        assert time.monotonic() - started < 3  # answered, not queued behind the load
        assert response.status_code == 503 and response.json()["status"] == "loading"
    finally:
        release.set()
        holder.join()


# -- clients that leave -----------------------------------------------------------------------------


async def test_a_rest_client_leaving_mid_answer_frees_the_row_and_logs_it_cancelled(world):
    token = await sync_to_async(lambda: Token.objects.create(user=world.alice).key)()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/chat/", "raw_path": b"/api/chat/", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"authorization", f"Token {token}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    body = json.dumps(LONG).encode()
    scope["headers"].append((b"content-length", str(len(body)).encode()))
    request = ApplicationCommunicator(application, scope)
    await request.send_input({"type": "http.request", "body": body, "more_body": False})
    await wait_until(generating)
    await request.send_input({"type": "http.disconnect"})
    await wait_until(InteractionLog.objects.filter(user=world.alice, status="cancelled").exists)
    await wait_until(lambda: not generating())
    log = await sync_to_async(InteractionLog.objects.get)(user=world.alice, status="cancelled")
    assert log.tokens < LONG["max_new_tokens"] and log.source == "api"
    await sync_to_async(assert_nothing_half_written)()
    with contextlib.suppress(Exception):
        await request.wait(timeout=1)


async def test_a_socket_closed_mid_answer_leaves_its_conversation_whole(world):
    ws, _, _ = await connect(world.alice)
    # Slowed, so that the answer is still running when the socket closes: with tokens joined
    # per interval, the tiny model's whole answer can follow its first frame before the close.
    with slowed_forward(runtime.site_model()):
        await ws.send_json_to({"type": "generate", **LONG, "conversation_id": world.conversation.pk})
        assert (await ws.receive_json_from(timeout=30))["type"] == "start"
        assert (await ws.receive_json_from(timeout=30))["type"] == "token"
        await ws.disconnect()
        await wait_until(lambda: InteractionLog.objects.filter(conversation=world.conversation, status="cancelled").exists())
    await wait_until(lambda: not generating())
    await sync_to_async(assert_nothing_half_written)()

    # The conversation goes on where it stopped.
    ws, _, _ = await connect(world.alice)
    await ws.send_json_to({"type": "generate", "prompt": "Go on.", "max_new_tokens": 3,
                           "conversation_id": world.conversation.pk})
    assert (await frames_until_end(ws, timeout=60))[-1]["type"] == "done"
    await ws.disconnect()
    await sync_to_async(assert_nothing_half_written)()
    roles = await sync_to_async(lambda: list(world.conversation.messages.values_list("role", flat=True)))()
    assert roles[:2] == ["user", "assistant"] and roles[-2:] == ["user", "assistant"] and len(roles) >= 5


# -- the inference worker ------------------------------------------------------------------------------


@pytest.mark.slow  # waits out the worker silence timeout, through Redis
@pytest.mark.parametrize("inference_mode", ["worker"], indirect=True)
async def test_a_worker_killed_mid_answer_fails_the_turn_whole_and_a_new_worker_takes_over(world, inference_mode):
    from tests.ws import conftest

    ws, _, _ = await connect(world.alice)
    loop = asyncio.get_running_loop()
    # Slowed, so that the answer is still running when its worker dies (on an idle machine the
    # tiny model finished all 200 tokens before the kill, and the test saw "done").
    with slowed_forward(runtime.site_model()):
        await ws.send_json_to({"type": "generate", **LONG, "conversation_id": world.conversation.pk})
        assert (await ws.receive_json_from(timeout=30))["type"] == "start"
        assert (await ws.receive_json_from(timeout=30))["type"] == "token"
        for worker in list(conftest.RUNNING_WORKERS):
            await loop.run_in_executor(None, worker.kill)
    error = (await frames_until_end(ws, timeout=30))[-1]
    assert error["type"] == "error" and error["code"] == "worker_unavailable"
    failed = await sync_to_async(InteractionLog.objects.get)(conversation=world.conversation, status="failed")
    assert failed.tokens < LONG["max_new_tokens"]
    await sync_to_async(assert_nothing_half_written)()

    replacement = await loop.run_in_executor(None, lambda: WorkerThread().start())
    try:
        await ws.send_json_to({"type": "generate", "prompt": "Go on.", "max_new_tokens": 3,
                               "conversation_id": world.conversation.pk})
        assert (await frames_until_end(ws, timeout=60))[-1]["type"] == "done"
    finally:
        await loop.run_in_executor(None, replacement.kill)
        await ws.disconnect()
    await sync_to_async(assert_nothing_half_written)()


# -- vector computation -----------------------------------------------------------------------------


def media_files(settings) -> set[str]:
    root = settings.MEDIA_ROOT
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_files_match_sets(settings) -> None:
    """Every file a vector set names exists, and every file on disk belongs to a set."""
    named = {name for name in VectorSet.objects.exclude(file="").values_list("file", flat=True)}
    assert named == media_files(settings)


@pytest.fixture
def tone(tiny_site):
    return PreferenceDimension.objects.create(
        name="tone", negative_label="Casual", positive_label="Formal",
        positive_examples=CORPUS[0::2], negative_examples=CORPUS[1::2],
    )


def compute(vector_set, **kwargs) -> VectorSet:
    return vector_sets.vector_set_compute(vector_set=vector_set, loaded=runtime.site_model(), **kwargs)


def test_a_recomputation_that_raises_keeps_the_committed_file_and_a_retry_recovers(tone, settings):
    vector_set = compute(vector_sets.vector_set_create(name="t", model_id=runtime.site_model_id(), dimensions=[tone]))
    assert vector_set.status == "ready"
    good_file = vector_set.file.name

    PreferenceDimension.objects.filter(pk=tone.pk).update(positive_examples=[])  # the next run raises
    vector_sets.vector_set_restart(vector_set=vector_set)
    vector_set = compute(vector_set)
    assert vector_set.status == "failed" and "no training examples" in vector_set.error
    assert vector_set.file.name == good_file  # the vectors computed before are not thrown away
    assert_files_match_sets(settings)

    PreferenceDimension.objects.filter(pk=tone.pk).update(positive_examples=CORPUS[0::2])
    vector_sets.vector_set_restart(vector_set=vector_set)
    vector_set = compute(vector_set)
    assert vector_set.status == "ready" and vector_set.file.name != good_file
    assert_files_match_sets(settings)  # the old file went once the new one was in place


def test_a_computation_that_times_out_leaves_no_file_and_a_retry_recovers(tone, settings, timeout_never_lost):
    # Enough text that extraction on the tiny model outlasts a one-second timeout.
    big = PreferenceDimension.objects.create(
        name="big", negative_label="A", positive_label="B",
        positive_examples=[" ".join(CORPUS)] * 3000, negative_examples=[" ".join(CORPUS[::-1])] * 3000,
    )
    vector_set = vector_sets.vector_set_create(name="t", model_id=runtime.site_model_id(), dimensions=[big])
    with pytest.raises(TimeoutException), TimeoutHandler(1):  # how a django-q2 worker ends a task
        compute(vector_set)
    vector_set.refresh_from_db()
    assert vector_set.status == "failed" and "timeout" in vector_set.error.lower()
    assert_files_match_sets(settings)

    vector_set.dimensions.set([tone])
    vector_sets.vector_set_restart(vector_set=vector_set)
    assert compute(vector_set).status == "ready"
    assert_files_match_sets(settings)
