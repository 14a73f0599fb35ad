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


def test_installing_in_daphne_checks_that_the_cap_took_effect():
    from daphne import http_protocol

    from ops.body_limit import _check_daphne_patch, install_in_daphne

    before = http_protocol.WebRequest  # daphne's module global: the live servers of this process read it
    try:
        assert install_in_daphne(LIMIT) is True

        class HandsOnRefusedBodies(http_protocol.WebRequest):
            """The patch as it was: a refused body still went on to the application."""

            def process(self):
                return self._steerlab_dispatch()

        http_protocol.WebRequest = HandsOnRefusedBodies
        with pytest.raises(RuntimeError, match="did not take effect"):
            _check_daphne_patch(http_protocol, HandsOnRefusedBodies)
    finally:
        http_protocol.WebRequest = before


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` in one piece and read the answer until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            connection.sendall(request)
        except OSError:
            pass  # refused and closed while we sent: the answer is already there
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_refused_body_never_reaches_the_application_under_daphne(tmp_path):
    """Against the installed daphne: a chunked body whose end arrives with the bytes over the
    cap used to be handed to the application, truncated to the cap."""
    limit, log = 8192, tmp_path / "bodies"
    log.touch()
    env = {**os.environ, "BODY_LIMIT": str(limit), "BODY_LOG": str(log)}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "tests.security.body_limit_app:application"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                exchange(port, b"POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "daphne did not start"
                time.sleep(0.2)
        chunks = b"".join(b"400\r\n" + b"a" * 1024 + b"\r\n" for _ in range(limit // 1024 + 4)) + b"0\r\n\r\n"
        refused = {
            "chunked": b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
            "declared": b"POST /declared HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (limit + 1)
                        + b"b" * (limit + 1),
        }
        for name, request in refused.items():
            answer = exchange(port, request)
            assert answer.startswith(b"HTTP/1.1 413 ") and b"limited to 8192 bytes" in answer, (name, answer[:200])
            assert answer.count(b"HTTP/1.1 ") == 1, (name, answer[-200:])  # no second answer, from the application
        time.sleep(0.5)  # a request dispatched after its refusal would be logged by now
        assert log.read_text() == "/ready 0\n"
        answer = exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + chunks)
        assert b"application/json" in answer and b'"code": "request_too_large"' in answer
        within = exchange(port, b"POST /within HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                          % limit + b"c" * limit)
        assert within.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.5)
        assert log.read_text() == f"/ready 0\n/within {limit}\n"
    finally:
        server.terminate()
        server.wait(30)
