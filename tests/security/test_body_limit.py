"""Oversized bodies are refused with 413 before anything buffers them (ops.body_limit): by the
ASGI middleware in front of the application, and by daphne itself while the body arrives.
bench/body_limit.py measures the same with a 1 GiB body."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application

from bench.body_limit import send
from bench.server import free_port
from ops.body_limit import BodyLimit
from tests.site.test_settings import REPO

LIMIT = 64 * 1024


class Recording:
    """The real Django application, noting how many body bytes reached it."""

    def __init__(self):
        self.app, self.bytes = get_asgi_application(), 0

    async def __call__(self, scope, receive, send):
        async def counting():
            message = await receive()
            self.bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def scope(headers=()):
    return {"type": "http", "method": "POST", "path": "/accounts/login/", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), *headers], "client": ("10.0.0.1", 1), "server": ("testserver", 80)}


async def answer(communicator):
    start = await communicator.receive_output(10)
    body = await communicator.receive_output(10)
    return start["status"], body["body"]


async def test_a_declared_length_over_the_cap_is_refused_before_the_application_runs():
    app = Recording()
    communicator = ApplicationCommunicator(BodyLimit(app, limit=LIMIT), scope([(b"content-length", str(LIMIT + 1).encode())]))
    status, body = await answer(communicator)
    assert status == 413 and f"limited to {LIMIT} bytes".encode() in body
    assert app.bytes == 0


async def test_a_streamed_body_is_refused_when_it_passes_the_cap():
    app = Recording()
    communicator = ApplicationCommunicator(BodyLimit(app, limit=LIMIT), scope())
    for _ in range(LIMIT // 4096 + 2):
        await communicator.send_input({"type": "http.request", "body": b"a" * 4096, "more_body": True})
    status, _ = await answer(communicator)
    assert status == 413 and app.bytes <= LIMIT


@pytest.mark.django_db
async def test_a_body_within_the_cap_reaches_the_application():
    app = Recording()
    communicator = ApplicationCommunicator(BodyLimit(app, limit=LIMIT), scope([(b"content-length", b"4096")]))
    await communicator.send_input({"type": "http.request", "body": b"a" * 4096, "more_body": False})
    status, _ = await answer(communicator)
    assert status == 403 and app.bytes == 4096  # Django's CSRF check: the body got through


def test_the_site_application_has_the_cap_in_front():
    from django.conf import settings

    from steerlab_site.asgi import application

    http = application.application_mapping["http"]
    assert isinstance(http, BodyLimit) and http.limit == settings.STEERLAB_MAX_BODY_BYTES


@pytest.mark.slow
def test_daphne_refuses_while_the_body_arrives(tmp_path):
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "LOG_LEVEL": "WARNING",
           "STEERLAB_MAX_BODY_BYTES": str(LIMIT)}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "steerlab_site.asgi:application"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).read()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "daphne did not start"
                time.sleep(0.5)
        total = 64 * 1024 * 1024
        for chunked in (False, True):
            status, sent, _ = send(port, total, chunked=chunked)
            assert " 413 " in status + " ", (chunked, status)
            assert sent < total / 4, (chunked, sent)  # answered long before the body ended
    finally:
        server.terminate()
        server.wait(30)
