import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


@pytest.mark.slow
def test_it_reports_the_model_device_and_queues(client, shared_set):
    from steering import runtime

    runtime.site_model()
    body = client.get("/api/health/").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["model"] == runtime.site_model_id() and body["model_loaded"] is True and body["device"] == "cpu"
    assert "tasks" in body["queue_depth"]


def test_it_answers_503_when_the_database_is_unusable(client, monkeypatch):
    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("database is locked")

    monkeypatch.setattr(connection, "ensure_connection", broken)
    response = client.get("/api/health/")
    assert response.status_code == 503
    assert response.json()["database"].startswith("unavailable")


def test_it_answers_503_while_the_model_cannot_load(client, settings, tmp_path):
    settings.STEERLAB_MODEL = str(tmp_path / "no-such-model")
    from steering import runtime

    with pytest.raises(Exception):
        runtime.site_model()
    response = client.get("/api/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and "not found" in body["model_error"]
