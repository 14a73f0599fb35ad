"""/metrics: who may scrape it, and that what the platform does moves its numbers (a real chat
on the embedded model, a real websocket, a real failed django-q2 task)."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from steering.serving import runtime
from tests.ws.conftest import connect

TOKEN = "scrape-token-0123456789abcdef"


def scrape(client=None, **headers) -> dict[tuple, float]:
    """/metrics parsed: {(sample name, (label, value)…): value}."""
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def staff_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# ---- access --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_scrapes_are_refused(settings):
    settings.METRICS_TOKEN = TOKEN
    response = Client().get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"steerlab_" not in response.content


@pytest.mark.django_db
def test_a_user_who_is_not_staff_is_refused(alice):
    assert staff_client(alice).get("/metrics").status_code == 401


@pytest.mark.django_db
def test_staff_may_scrape(charlie):
    assert ("steerlab_model_loaded",) in scrape(staff_client(charlie))


@pytest.mark.django_db
def test_the_bearer_token_opens_it_and_a_wrong_one_does_not(settings):
    settings.METRICS_TOKEN = TOKEN

    assert ("steerlab_model_loaded",) in scrape(Authorization=f"Bearer {TOKEN}")
    assert Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert Client().get("/metrics", headers={"Authorization": f"Token {TOKEN}"}).status_code == 401


@pytest.mark.django_db
def test_no_token_configured_means_no_token_accepted(settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


@pytest.mark.django_db
def test_it_can_be_made_public(settings):
    settings.METRICS_PUBLIC = True
    assert ("steerlab_model_loaded",) in scrape()


# ---- what it counts ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_scrape_never_loads_the_model(settings, charlie, tmp_path):
    settings.STEERLAB_MODEL = str(tmp_path / "a-model-nobody-loaded")

    samples = scrape(staff_client(charlie))

    assert samples[("steerlab_model_loaded",)] == 0
    assert samples[("steerlab_inference_waiting",)] == samples[("steerlab_inference_active",)] == 0
    # Neither loaded nor even tried: a load attempt would have recorded its failure.
    assert runtime._key() not in runtime._sites and runtime._key() not in runtime._load_errors


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_chat_request_moves_the_counters(as_alice, charlie, shared_set):
    staff = staff_client(charlie)
    before = scrape(staff)

    response = as_alice.post("/api/chat/", {"prompt": "Name one fruit.", "max_new_tokens": 12}, format="json")
    assert response.status_code == 200, response.content
    tokens = response.json()["tokens"]
    after = scrape(staff)

    def moved(*key):
        return after.get(key, 0) - before.get(key, 0)

    chat = ("steerlab_http_requests_total", ("method", "POST"), ("route", "/api/chat/"), ("status", "200"))
    assert moved(*chat) == 1
    assert moved("steerlab_http_request_duration_seconds_count", ("method", "POST"), ("route", "/api/chat/")) == 1
    assert moved("steerlab_generations_total", ("source", "api"), ("status", "ok")) == 1
    assert moved("steerlab_generated_tokens_total", ("source", "api")) == tokens > 0
    assert moved("steerlab_generation_first_token_seconds_count") == 1
    if tokens >= 2:
        assert moved("steerlab_generation_tokens_per_second_count") == 1
        assert moved("steerlab_generation_tokens_per_second_sum") > 0
    # The model is loaded now, and the generation has left the scheduler.
    assert after[("steerlab_model_loaded",)] == 1
    assert after[("steerlab_inference_active",)] == after[("steerlab_inference_waiting",)] == 0
    # The scrape itself is counted too, under its route.
    assert moved("steerlab_http_requests_total", ("method", "GET"), ("route", "/metrics"), ("status", "200")) == 1


@pytest.mark.django_db
def test_routes_not_paths_label_requests_and_methods_are_bounded(charlie, alice):
    staff = staff_client(charlie)
    before = scrape(staff)
    user = staff_client(alice)
    user.get("/api/interactions/98765/")
    user.get("/no/such/page/")
    user.generic("BREW", "/api/")

    after = scrape(staff)

    def moved(*key):
        return after.get(key, 0) - before.get(key, 0)

    assert moved("steerlab_http_requests_total", ("method", "GET"), ("route", "/api/interactions/<int:pk>/"), ("status", "404")) == 1
    assert moved("steerlab_http_requests_total", ("method", "GET"), ("route", "(unmatched)"), ("status", "404")) == 1
    assert moved("steerlab_http_requests_total", ("method", "other"), ("route", "/api/"), ("status", "405")) == 1
    assert not any("98765" in str(key) or "BREW" in str(key) for key in after)


async def test_websocket_connections_are_counted(transactional_db, charlie):
    from prometheus_client import REGISTRY

    def value(name):
        return REGISTRY.get_sample_value(name) or 0

    open_before, accepted_before = value("steerlab_websocket_connections"), value("steerlab_websocket_connections_accepted_total")
    communicator, connected, _ = await connect(charlie)
    assert connected
    assert value("steerlab_websocket_connections") == open_before + 1

    await communicator.disconnect()

    assert value("steerlab_websocket_connections") == open_before
    assert value("steerlab_websocket_connections_accepted_total") == accepted_before + 1


async def test_a_refused_websocket_is_not_counted_as_accepted(transactional_db):
    from prometheus_client import REGISTRY

    accepted_before = REGISTRY.get_sample_value("steerlab_websocket_connections_accepted_total") or 0
    _, connected, code = await connect(None)

    assert not connected and code == 4401
    assert (REGISTRY.get_sample_value("steerlab_websocket_connections_accepted_total") or 0) == accepted_before


def run_queued_tasks() -> None:
    """One round of a django-q2 cluster, in this process: take the queued tasks from the ORM
    broker, run them in its worker loop, and save the results with its monitor."""
    from multiprocessing import Queue, Value

    from django_q.brokers import get_broker
    from django_q.monitor import monitor
    from django_q.signing import SignedPackage
    from django_q.worker import worker

    broker, tasks, results = get_broker(), Queue(), Queue()
    while broker.queue_size():  # a task taken is locked, so this counts down
        for ack_id, package in broker.dequeue() or []:
            tasks.put({**SignedPackage.loads(package), "ack_id": ack_id})
    tasks.put("STOP")
    worker(tasks, results, Value("f", -1))
    results.put("STOP")
    monitor(results, broker)


# transaction=True: django-q2's worker and monitor close the database connection, as they do
# between tasks in the cluster.
@pytest.mark.django_db(transaction=True)
def test_failed_tasks_and_the_task_queue_are_counted(charlie):
    from django_q.tasks import async_task

    staff = staff_client(charlie)
    failed = ("steerlab_tasks_failed", ("func", "math.sqrt"))
    before = scrape(staff)
    async_task("math.sqrt", -1)  # fails: math domain error
    async_task("math.floor", 1.5)

    assert scrape(staff)[("steerlab_tasks_queued",)] == before[("steerlab_tasks_queued",)] + 2
    run_queued_tasks()
    after = scrape(staff)

    assert after[failed] == before.get(failed, 0) + 1
    assert ("steerlab_tasks_failed", ("func", "math.floor")) not in after
    # The failed task stays queued, locked until its retry; the successful one is gone.
    assert after[("steerlab_tasks_queued",)] == before[("steerlab_tasks_queued",)] + 1


def test_the_inference_worker_serves_its_scheduler_and_process_metrics():
    import urllib.request

    from prometheus_client import start_http_server

    from steering.serving.collectors import worker_registry

    # As `manage.py inference_worker --metrics-port` starts it (port 0: any free one).
    server, thread = start_http_server(0, "127.0.0.1", registry=worker_registry())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        thread.join(5)

    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"steerlab_inference_waiting", "steerlab_inference_active", "steerlab_model_loaded"} <= names
    assert "process_resident_memory_bytes" in names
    # Nothing that needs the database: the exporter's threads never open a connection.
    assert not any(name.startswith(("steerlab_tasks", "steerlab_http")) for name in names)
