"""/v1 fixtures: a live daphne server on a thread of this process, serving the real ASGI
application over real TCP, so that the official `openai` client talks to it exactly as to
any OpenAI-compatible server. On a thread, not in a child process: it shares the test
database, the settings fixtures' changes and the site model (loaded once, not twice), and a
test can look at the scheduler the requests ran on.

Twisted's reactor runs once per process, so the server lives for the whole session."""

from __future__ import annotations

import threading
import time

import pytest
from rest_framework.authtoken.models import Token

from steering.models import PreferenceDimension
from steering.services import vector_sets
from steering.serving import runtime
from tests.tiny_models import slowed_forward


def fresh_reactor() -> None:
    """Install Twisted's asyncio reactor on a new event loop, as daphne's own test process does
    after its fork (`daphne.testing._reinstall_reactor`). The `daphne` app imports daphne.server
    when Django starts, which creates the reactor's event loop, epoll instance included. The
    suite's browser tests run first and fork live servers, which inherit that instance; on the
    reactor from before those forks this server answered each request some 10 s late
    (tests/browser + tests/openai/test_chat_completions.py: over 5 minutes, against 54 s now)."""
    import asyncio
    import sys

    from twisted.internet import asyncioreactor

    sys.modules.pop("twisted.internet.reactor", None)
    sys.modules.pop("daphne.server", None)  # it holds the reactor it was imported with
    asyncioreactor.install(asyncio.new_event_loop())


@pytest.fixture(scope="session")
def live_server_url():
    fresh_reactor()
    from daphne.server import Server

    from steerlab_site.asgi import application
    from twisted.internet import reactor

    ready = threading.Event()
    server = Server(
        application=application,
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        signal_handlers=False,  # only the main thread may install them
        ready_callable=ready.set,
        verbosity=0,
    )
    thread = threading.Thread(target=server.run, name="live-daphne", daemon=True)
    thread.start()
    assert ready.wait(10), "daphne did not start"
    for _ in range(100):
        if server.listening_addresses:
            break
        threading.Event().wait(0.05)
    host, port = server.listening_addresses[0]
    yield f"http://{host}:{port}"
    reactor.callFromThread(reactor.stop)
    thread.join(10)


@pytest.fixture
def live(live_server_url, transactional_db):
    """The live server's URL, with a database the server's threads can see (committed rows)."""
    return live_server_url


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


@pytest.fixture
def alice_key(alice):
    return token_for(alice)


@pytest.fixture
def bob_key(bob):
    return token_for(bob)


@pytest.fixture
def client_for(live):
    """`client_for(key)`: the official synchronous OpenAI client pointed at the live server."""
    import openai

    def make(key, **kwargs):
        return openai.OpenAI(base_url=f"{live}/v1", api_key=key, max_retries=0, timeout=120, **kwargs)

    return make


@pytest.fixture
def tiny_set(tiny_site, live):
    """A ready, shared vector set with two dimensions on the tiny site model (random vectors:
    they steer, meaninglessly, which is all a protocol test needs)."""
    from steering.serving import runtime
    from tests.api.conftest import make_vectors

    loaded = runtime.site_model()
    for name in ("formality", "cost"):
        PreferenceDimension.objects.get_or_create(name=name, defaults={"negative_label": "low", "positive_label": "high"})
    vectors = make_vectors(["formality", "cost"], hidden=loaded.hidden_size, layers=loaded.num_layers, range_=0.5)
    return vector_sets.vector_set_register(vectors=vectors, name="tiny-default")


def wait_until_idle() -> None:
    """Until the site's scheduler runs and holds nothing: a stream closed by a test leaves the
    batch at the next decode step, which may come after the next test has started."""
    deadline = time.monotonic() + 60
    while any(runtime.inference_queue_depth().values()) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def slow_decode(tiny_set):
    """The site model's forward passes 0.3 s slower (`slowed_forward`), for tests that act
    while a generation is still running."""
    wait_until_idle()  # the site's model is this test's now: nothing of an earlier test left on it
    with slowed_forward(runtime.site_model()):
        yield
    wait_until_idle()  # the streams a test closed leave the batch before the next test

