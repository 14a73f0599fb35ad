"""Oversized bodies are refused with 413 before anything buffers them (ops.body_limit): by the
ASGI middleware in front of the application, and by daphne itself while the body arrives.
bench/body_limit.py measures the same with a 1 GiB body."""

import contextlib
import json
import os
import socket
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


@contextlib.contextmanager
def daphne(application: str, env: dict, ready, *, seconds: float):
    """A daphne process serving `application` on a free port, once `ready(port)` stops raising
    OSError; terminated on leaving."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
                              cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + seconds
        while True:
            try:
                ready(port)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "daphne did not start"
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
def test_daphne_refuses_while_the_body_arrives(tmp_path):
    env = {"DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "LOG_LEVEL": "WARNING",
           "STEERLAB_MAX_BODY_BYTES": str(LIMIT)}

    def ready(port):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).read()

    with daphne("steerlab_site.asgi:application", env, ready, seconds=120) as port:
        total = 64 * 1024 * 1024
        for chunked in (False, True):
            status, sent, _ = send(port, total, chunked=chunked)
            assert " 413 " in status + " ", (chunked, status)
            assert sent < total / 4, (chunked, sent)  # answered long before the body ended


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
    env = {"BODY_LIMIT": str(limit), "BODY_LOG": str(log)}

    def ready(port):
        exchange(port, b"POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with daphne("tests.security.body_limit_app:application", env, ready, seconds=60) as port:
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


# -- The GGUF imports' own cap (STEERLAB_UPLOAD_LIMITS_BY_URL) ---------------------------------

GGUF_URLS = ("api-vector-set-import-gguf", "admin:steering_vectorset_import_gguf")


def gguf_paths() -> list[str]:
    from django.urls import reverse

    return [reverse(name) for name in GGUF_URLS]


class Untouched(Recording):
    """Recording, noting whether the application ran at all."""

    def __init__(self):
        super().__init__()
        self.ran = False

    async def __call__(self, scope, receive, send):
        self.ran = True
        await super().__call__(scope, receive, send)


def test_the_gguf_imports_are_capped_at_the_gguf_setting_in_front_of_the_site(settings):
    from ops.body_limit import FORM_OVERHEAD, site_uploads
    from steerlab_site.asgi import application

    assert site_uploads() == {path: settings.STEERLAB_GGUF_MAX_BYTES for path in gguf_paths()}
    http = application.application_mapping["http"]
    for path in gguf_paths():
        cap = http.limits.cap(path)
        assert cap.file == settings.STEERLAB_GGUF_MAX_BYTES and cap.body == cap.file + FORM_OVERHEAD
    assert http.limits.cap("/api/vector-sets/upload/").body == settings.STEERLAB_MAX_BODY_BYTES


GENERAL, GGUF = 1024 * 1024, 4096  # the ASGI tests' caps: every body, and a GGUF file


def gguf_limited(app) -> BodyLimit:
    return BodyLimit(app, limit=GENERAL, uploads={path: GGUF for path in gguf_paths()})


@pytest.mark.parametrize("path", gguf_paths())
async def test_a_gguf_upload_declaring_more_than_its_cap_is_refused_before_its_body_is_read(path):
    app = Untouched()
    middleware = gguf_limited(app)
    over = middleware.limits.cap(path).body + 1  # the file's cap and its form's, far under GENERAL
    communicator = ApplicationCommunicator(middleware, {**scope([(b"content-length", str(over).encode())]), "path": path})
    await communicator.send_input({"type": "http.request", "body": b"a" * over, "more_body": False})
    status, body = await answer(communicator)
    assert status == 413 and f"Files sent to this URL are limited to {GGUF} bytes".encode() in body
    assert not app.ran and communicator.input_queue.qsize() == 1  # nothing read the body
    if path.startswith("/api/"):
        assert json.loads(body)["detail"].startswith("Files sent to this URL")


@pytest.mark.parametrize("path", gguf_paths())
async def test_a_streamed_gguf_upload_is_refused_when_it_passes_its_cap_whatever_root_path_is_in_front(path):
    app = Recording()
    middleware = gguf_limited(app)
    cap = middleware.limits.cap(path).body
    communicator = ApplicationCommunicator(middleware, {**scope(), "path": "/root" + path, "root_path": "/root"})
    for _ in range(cap // 4096 + 2):
        await communicator.send_input({"type": "http.request", "body": b"a" * 4096, "more_body": True})
    status, _ = await answer(communicator)
    assert status == 413 and app.bytes <= cap


@pytest.mark.django_db
async def test_a_body_over_the_gguf_cap_keeps_the_general_cap_on_other_paths():
    app = Recording()
    middleware = gguf_limited(app)
    size = middleware.limits.cap(gguf_paths()[0]).body + 1
    assert middleware.limits.cap("/accounts/login/").body == GENERAL > size
    communicator = ApplicationCommunicator(middleware, scope([(b"content-length", str(size).encode())]))
    await communicator.send_input({"type": "http.request", "body": b"a" * size, "more_body": False})
    status, _ = await answer(communicator)
    assert status == 403 and app.bytes == size  # /accounts/login/: Django's CSRF check ran


def upload_form(content: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = "steerlab-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.gguf"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


SITE_KEY = "live-body-limit-test-key-" + "x" * 30  # the sessions made here must be daphne's too


@pytest.fixture
def site_daphne(tmp_path, tiny_model_dir, django_db_setup, django_db_blocker):
    """The real site under daphne, on this test's database and the tiny model, with a GGUF cap
    of 1 KiB (a 65 KiB body with the form) and a general cap of 1 MiB."""
    from tests.accounts.test_forwarded_throttles import database_url

    with django_db_blocker.unblock():
        url = database_url()
    env = {"DEBUG": "0", "SECRET_KEY": SITE_KEY, "ALLOWED_HOSTS": "127.0.0.1",
           "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "STEERLAB_MODEL": str(tiny_model_dir),
           "STEERLAB_DEVICE": "cpu", "MEDIA_ROOT": str(tmp_path / "media"), "STEERLAB_RANGE_SEARCH": "0",
           "STEERLAB_GGUF_MAX_BYTES": "1024", "STEERLAB_MAX_BODY_BYTES": str(1024 * 1024)}

    def ready(port):
        exchange(port, b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")

    with daphne("steerlab_site.asgi:application", env, ready, seconds=120) as port:
        yield port


def head(path: str, length: int | None, kind: str = "application/octet-stream", extra: str = "") -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n{extra}{framing}\r\n"
            "Connection: close\r\n\r\n").encode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_a_gguf_upload_over_its_cap_before_reading_it_and_takes_one_within(
    site_daphne, alice, django_user_model, tmp_path, tiny_model_dir, settings
):
    from django.test import Client
    from rest_framework.authtoken.models import Token
    from transformers import AutoConfig

    import numpy as np

    from steering.models import VectorSet
    from tests.api.test_gguf import gguf_bytes

    port, token = site_daphne, Token.objects.create(user=alice).key
    auth = f"Authorization: Token {token}\r\n"
    big = 256 * 1024  # over the GGUF import's 65 KiB, far under the general 1 MiB
    for path in gguf_paths():
        # The headers alone: the 413 comes before a byte of the body is sent.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(head(path, big, extra=auth))
            answer = connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"limited to 1024 bytes" in answer, (path, answer[:300])
        if path.startswith("/api/"):
            assert b'{"detail": "Files sent to this URL are limited to 1024 bytes' in answer
        # A client that sends the whole body before reading still reads the 413 (the rest of
        # the body is read and dropped, not stored), and so does a chunked one.
        answer = exchange(port, head(path, big, extra=auth) + b"a" * big)
        assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1 ") == 1, (path, answer[:300])
        total = 64 * 1024 * 1024
        status, sent, _ = send(port, total, chunked=True, path=path, headers=auth)
        assert " 413 " in status + " " and sent < total / 4, (path, status, sent)  # cut off, past 1 MiB
    api, admin = gguf_paths()
    # The same body elsewhere is under the general cap, and reaches Django (its CSRF check).
    assert exchange(port, head("/accounts/login/", big) + b"a" * big).startswith(b"HTTP/1.1 403 ")
    assert VectorSet.objects.count() == 0
    # Within the cap the import works: a 1-layer control vector for the tiny model (under 1 KiB
    # only with a hidden size of at most ~200 floats, which the tiny model has).
    hidden = AutoConfig.from_pretrained(tiny_model_dir).hidden_size
    content = gguf_bytes({1: np.full(hidden, 1e-3)}, tmp_path)  # a scale within the ceiling
    assert len(content) <= 1024
    body, kind = upload_form(content, name="small", dimension="mood")
    answer = exchange(port, head(api, len(body), kind, auth) + body)
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 201 Created", b"HTTP/1.1 202 Accepted"), answer[-500:]
    assert VectorSet.objects.filter(name="small", owner=alice).exists()
    # And in the admin, for staff (a session made here, in the database daphne reads).
    settings.SECRET_KEY = SITE_KEY  # which signs the session's user
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x"))
    csrf = "c" * 32
    staff = f"Cookie: sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}\r\nX-CSRFToken: {csrf}\r\n"
    body, kind = upload_form(content, name="shared", dimension="mood")
    answer = exchange(port, head(admin, len(body), kind, staff) + body)
    assert answer.startswith(b"HTTP/1.1 302 ") and b"/change/" in answer, answer[:500]
    assert VectorSet.objects.filter(name="shared", owner=None).exists()
