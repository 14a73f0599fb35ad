"""Websocket fixtures: real sessions, the real ASGI application, the real embedded model and
formality vectors computed on it once per session."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from steering.data import catalog
from steering.engine import compute_vectors
from steering.models import PreferenceDimension
from steering.services import vector_sets
from steering.serving import runtime
from steerlab_site.asgi import application


@pytest.fixture(scope="session")
def formality_vectors():
    positive, negative = catalog.examples("formality")
    return compute_vectors(runtime.site_model(), {"formality": (positive[:24], negative[:24])},
                           labels={"formality": ["Casual", "Formal"]})


@pytest.fixture
def steerable(transactional_db, inference_mode, settings, tmp_path, formality_vectors):
    """A ready, shared formality vector set: the site default."""
    settings.MEDIA_ROOT = tmp_path / "media"
    PreferenceDimension.objects.create(name="formality", negative_label="Casual", positive_label="Formal")
    return vector_sets.vector_set_register(vectors=formality_vectors, name="default")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(user=None, origin=b"http://testserver"):
    headers = [(b"host", b"testserver"), (b"origin", origin)]
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, code = await communicator.connect(timeout=10)
    return communicator, connected, code


async def frames_until_end(communicator, timeout=120):
    """Every frame up to and including the generation's done or error frame."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


class WorkerThread:
    """`manage.py inference_worker`'s loop on a thread of this process: it shares the test
    database, while every request and token really travels through Redis. (The failover
    tests, tests/ws/test_worker_queue.py, run real worker processes.)"""

    def __init__(self):
        import asyncio
        import threading

        from steering.serving.worker import InferenceWorker

        self.worker = InferenceWorker(runtime.site_scheduler())
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import asyncio

        asyncio.set_event_loop(self.loop)
        ready = asyncio.Event()
        self.task = self.loop.create_task(self.worker.run(ready))
        self.loop.create_task(self._signal(ready))
        try:
            self.loop.run_until_complete(self.task)
        except BaseException:
            pass
        # Drop the Redis connections, as a dead process's are.
        from steering.serving import redis_streams

        client = redis_streams._clients.pop(self.loop, None)
        if client is not None:
            self.loop.run_until_complete(client.aclose())

    async def _signal(self, ready):
        await ready.wait()
        self.ready.set()

    def start(self):
        self.thread.start()
        assert self.ready.wait(10), "the inference worker did not start"
        RUNNING_WORKERS.add(self)
        return self

    def kill(self):
        """Stop answering at once, as a killed process would (its tickets are cancelled)."""
        RUNNING_WORKERS.discard(self)
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(10)


RUNNING_WORKERS: set[WorkerThread] = set()


@pytest.fixture(params=["local", "worker"])
def inference_mode(request, settings):
    if request.param == "worker":
        import uuid

        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [settings.TEST_REDIS_URL], "prefix": f"steerlab-test-{uuid.uuid4().hex[:8]}"},
            }
        }
        settings.STEERLAB_INFERENCE = "worker"
        settings.STEERLAB_WORKER_SILENCE_S = 3.0
        settings.REDIS_URL = settings.TEST_REDIS_URL
        settings.STEERLAB_QUEUE_PREFIX = f"steerlab-test-{uuid.uuid4().hex[:8]}"
        worker = WorkerThread().start()
        yield request.param
        worker.kill()
    else:
        yield request.param
