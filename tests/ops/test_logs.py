"""Request logging: ids, the access line's fields, JSON lines, and secrets kept out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from ops.logs import REDACTED, redact

REPO = Path(__file__).resolve().parents[2]


def access_records(caplog):
    return [r for r in caplog.records if r.name == "steerlab.request"]


@pytest.mark.django_db
def test_the_access_line_carries_request_user_route_status_and_duration(caplog, alice):
    client = Client()
    client.force_login(alice)

    with caplog.at_level("INFO", logger="steerlab.request"):
        response = client.get("/api/interactions/?page=1&secret=hunter2", headers={"X-Request-ID": "edge-1234abcd"})

    assert response.status_code == 200
    assert response["X-Request-ID"] == "edge-1234abcd"
    (record,) = access_records(caplog)
    assert (record.request_id, record.user_id, record.method) == ("edge-1234abcd", alice.pk, "GET")
    assert (record.path, record.route, record.status) == ("/api/interactions/", "/api/interactions/", 200)
    assert record.duration_ms > 0
    assert "hunter2" not in record.getMessage()


@pytest.mark.django_db
def test_a_token_users_id_is_logged(caplog, bob):
    token = Token.objects.create(user=bob)

    with caplog.at_level("INFO", logger="steerlab.request"):
        Client().get("/api/interactions/", headers={"Authorization": f"Token {token.key}"})

    (record,) = access_records(caplog)
    assert record.user_id == bob.pk
    assert token.key not in caplog.text


@pytest.mark.django_db
def test_anonymous_requests_log_no_user_and_an_odd_request_id_is_replaced(caplog):
    with caplog.at_level("INFO", logger="steerlab.request"):
        response = Client().get("/accounts/login/", headers={"X-Request-ID": "has spaces\nand a newline"})

    (record,) = access_records(caplog)
    assert record.user_id is None
    assert record.request_id == response["X-Request-ID"] != "has spaces\nand a newline"


def test_redact_removes_secrets_url_passwords_and_authorization_values():
    text = (
        "key s3cr3t-value-xyz; db postgres://steer:pa55word@db:5432/x; redis://:r3dis-pw@cache:6379/0; "
        "Authorization: Token 9f8e7d6c5b4a; headers {'authorization': 'Bearer abc.def'}"
    )

    cleaned = redact(text, ["s3cr3t-value-xyz"])

    for secret in ("s3cr3t-value-xyz", "pa55word", "r3dis-pw", "9f8e7d6c5b4a", "abc.def"):
        assert secret not in cleaned
    assert f"postgres://steer:{REDACTED}@db:5432/x" in cleaned
    assert f"Authorization: Token {REDACTED}" in cleaned


# One process with LOG_FORMAT=json: a request that 404s (Django logs it with the request
# attached), and errors whose text holds the configured secrets.
JSON_RUN = """
import logging, django
django.setup()
from django.test import Client
Client().get("/no/such/page/?password=hunter2", headers={"X-Request-ID": "probe-1234abcd"})
log = logging.getLogger("steerlab.test")
log.error("connecting to %s", "postgres://steer:db-pa55word-42@db:5432/steerlab")
try:
    raise RuntimeError("signing with " + "k3y-only-for-the-json-log-test-0123456789")
except RuntimeError:
    log.exception("it failed", extra={"metrics_token": "m3trics-token-0123456789"})
"""


def test_json_logs_are_one_object_a_line_without_secrets():
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "steerlab_site.settings",
        "LOG_FORMAT": "json",
        "SECRET_KEY": "k3y-only-for-the-json-log-test-0123456789",
        "METRICS_TOKEN": "m3trics-token-0123456789",
        "ALLOWED_HOSTS": "testserver",
        "DATABASE_URL": "postgres://steer:db-pa55word-42@127.0.0.1:1/steerlab",
    }
    result = subprocess.run([sys.executable, "-c", JSON_RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one object

    for secret in ("hunter2", "db-pa55word-42", "k3y-only-for-the-json-log-test", "m3trics-token-0123456789"):
        assert secret not in result.stderr
    access = next(line for line in lines if line["logger"] == "steerlab.request")
    assert access["request_id"] == "probe-1234abcd" and access["level"] == "INFO"
    assert (access["path"], access["route"], access["status"], access["user_id"]) == ("/no/such/page/", "(unmatched)", 404, None)
    assert access["time"].endswith("+00:00") and access["duration_ms"] >= 0
    not_found = next(line for line in lines if line["logger"] == "django.request")
    assert not_found["request_id"] == "probe-1234abcd" and "request" not in not_found
    failed = next(line for line in lines if line["message"] == "it failed")
    assert "RuntimeError: signing with [redacted]" in failed["exc_info"]
    assert failed["metrics_token"] == REDACTED
