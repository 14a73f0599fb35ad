"""Secrets never reach an error page or the log: a request that crashes a view (DEBUG off, as
in production) gets a bare 500, and what the site's own log handler writes about it holds
neither the settings' secrets nor the password, token or cookies the request carried."""

from __future__ import annotations

import io
import logging

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db

PASSWORD_SENT = "hunter2-correct-horse"


@pytest.fixture
def site_log():
    """What the site's configured console handler writes (its formatter and filters, secret
    scrubbing included), captured instead of going to stderr."""
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "name", None) == "console"]
    assert handlers, "settings.LOGGING names a console handler on the root logger"
    buffer = io.StringIO()
    previous = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous):
        handler.setStream(stream)


@pytest.fixture
def broken_site(settings):
    settings.ROOT_URLCONF = "tests.security.boom_urls"
    settings.DEBUG = False


def secrets_of(settings, token: str, client: Client) -> list[str]:
    return [settings.SECRET_KEY, PASSWORD_SENT, token, client.cookies["sessionid"].value]


@pytest.mark.parametrize("url", ["/boom/", "/api/boom/"])
def test_a_crash_shows_a_bare_500_and_logs_no_secret(broken_site, settings, site_log, alice, url):
    token = Token.objects.create(user=alice).key
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.post(
        f"{url}?token={token}&password={PASSWORD_SENT}",
        {"username": "alice", "password": PASSWORD_SENT, "token": token},
        HTTP_AUTHORIZATION=f"Token {token}",
    )
    assert response.status_code == 500
    page = response.content.decode()
    for leak in [*secrets_of(settings, token, client), "Traceback", "ZeroDivisionError", "SECRET_KEY", "DATABASES"]:
        assert leak not in page, leak
    written = site_log.getvalue()
    assert "ZeroDivisionError" in written  # the crash is logged, with its traceback
    for leak in secrets_of(settings, token, client):
        assert leak not in written, leak


def test_a_refused_log_in_logs_no_password(settings, site_log, alice):
    client = Client()
    response = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD_SENT})
    assert response.status_code == 400
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD_SENT})
    assert response.status_code == 200  # the form again, with its error
    assert PASSWORD_SENT not in response.content.decode()
    assert PASSWORD_SENT not in site_log.getvalue()


def test_a_404_page_shows_no_urlconf_or_settings(settings, client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "api/vector-sets" not in page and "Django tried these URL patterns" not in page
    assert settings.SECRET_KEY not in page
