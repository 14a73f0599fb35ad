import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


@pytest.mark.slow
def test_it_reports_the_model_device_and_queues(client, shared_set, charlie):
    from steering.serving import runtime

    client.force_login(charlie)
    runtime.site_model()
    body = client.get("/api/health/").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["model"] == runtime.site_model_id() and body["model_loaded"] is True and body["device"] == "cpu"
    assert "tasks" in body["queue_depth"]


def test_it_answers_503_when_the_database_is_unusable(client, monkeypatch, settings):
    settings.METRICS_TOKEN = "scraper-secret-0123456789"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scraper-secret-0123456789"

    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("database is locked")

    monkeypatch.setattr(connection, "ensure_connection", broken)
    response = client.get("/api/health/")
    assert response.status_code == 503
    assert response.json()["database"].startswith("unavailable")


def test_it_answers_503_while_the_model_cannot_load(client, settings, tmp_path, charlie):
    client.force_login(charlie)
    settings.STEERLAB_MODEL = str(tmp_path / "no-such-model")
    from steering.serving import runtime

    with pytest.raises(Exception):
        runtime.site_model()
    response = client.get("/api/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and "not found" in body["model_error"]


def _private_set_and_broken_model(settings, tmp_path, alice):
    from tests.api.conftest import make_vectors
    from steering.serving import runtime
    from steering.services import vector_sets

    vector_sets.dimension_import_default(name="formality")
    vector_sets.vector_set_register(vectors=make_vectors(["formality"]), name="alice's", owner=alice)
    settings.STEERLAB_MODEL = str(tmp_path / "secret-model-dir")
    with pytest.raises(Exception):
        runtime.site_model()


def test_it_tells_anonymous_callers_the_status_only(client, settings, tmp_path, alice):
    _private_set_and_broken_model(settings, tmp_path, alice)
    response = client.get("/api/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "error"}
    assert "secret-model-dir" not in response.content.decode()


def test_it_tells_anonymous_callers_the_status_only_when_the_database_fails(client, monkeypatch):
    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("database is locked")

    monkeypatch.setattr(connection, "ensure_connection", broken)
    response = client.get("/api/health/")
    assert response.status_code == 503 and response.json() == {"status": "error"}


def test_it_gives_staff_the_details(client, settings, tmp_path, alice, charlie):
    _private_set_and_broken_model(settings, tmp_path, alice)
    client.force_login(charlie)
    body = client.get("/api/health/").json()
    assert body["status"] == "error" and "secret-model-dir" in body["model"] and "model_error" in body


def test_it_gives_staff_tokens_the_details(client, settings, tmp_path, alice, charlie):
    from rest_framework.authtoken.models import Token

    _private_set_and_broken_model(settings, tmp_path, alice)
    token = Token.objects.create(user=charlie)
    body = client.get("/api/health/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert "model_error" in body


def test_it_gives_the_metrics_token_the_details(client, settings, tmp_path, alice):
    _private_set_and_broken_model(settings, tmp_path, alice)
    settings.METRICS_TOKEN = "scraper-secret-0123456789"
    assert "model_error" in client.get("/api/health/", HTTP_AUTHORIZATION="Bearer scraper-secret-0123456789").json()
    assert client.get("/api/health/", HTTP_AUTHORIZATION="Bearer wrong-secret-0123456789").json() == {"status": "error"}


def test_it_gives_users_who_are_not_staff_the_status_only(client, settings, tmp_path, alice):
    _private_set_and_broken_model(settings, tmp_path, alice)
    client.force_login(alice)
    assert client.get("/api/health/").json() == {"status": "error"}


def test_a_staff_session_still_gets_the_status_while_the_database_is_down(client, monkeypatch, charlie):
    client.force_login(charlie)

    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("database is locked")

    monkeypatch.setattr(connection, "ensure_connection", broken)
    response = client.get("/api/health/")
    assert response.status_code == 503 and response.json() == {"status": "error"}
