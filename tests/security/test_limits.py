"""The limits, walked over the route table (tests/security/routes.py): every write that spends
a budget answers 429 with Retry-After once the budget is spent, and changes nothing; every
route, for every method, refuses a body over the cap with 413 before the application sees it."""

from __future__ import annotations

from collections import defaultdict

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import Client
from rest_framework.throttling import ScopedRateThrottle

from tests.security.routes import ROUTES, WRITES, _param, fill
from tests.security.test_routes import logged_in, row_counts, send, values

SCOPES = ("chat", "compute", "login", "login_address", "login_account", "signup")


def throttled_writes():
    return [_param(route, method) for route, spec in ROUTES.items() if spec.throttle
            for method in spec.methods if method in WRITES]


@pytest.mark.django_db
@pytest.mark.parametrize("route, method", throttled_writes())
def test_a_spent_budget_answers_429_with_retry_after_and_changes_nothing(
    world, tmp_path, settings, monkeypatch, route, method
):
    spent = {scope: "0/hour" for scope in SCOPES}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", spent)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": spent}
    client = Client() if ROUTES[route].access == "public" else logged_in(world.alice)
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    before = row_counts()
    response = send(client, route, method, url, payload)
    assert response.status_code == 429, (route, response.status_code, response.content[:300])
    assert 0 < int(response["Retry-After"]) <= 3600
    assert row_counts() == before


def every_request():
    return [pytest.param(route, method, id=f"{route}-{method}") for route, spec in ROUTES.items() for method in spec.methods]


@pytest.mark.parametrize("route, method", every_request())
async def test_a_body_over_the_cap_is_refused_on_every_route(settings, route, method):
    from steerlab_site.asgi import application

    limit = application.application_mapping["http"].limit
    assert limit == settings.STEERLAB_MAX_BODY_BYTES
    url = ROUTES[route].methods[method][0].format_map(defaultdict(lambda: "1"))
    path, _, query = url.partition("?")
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-length", str(limit + 1).encode())],
             "client": ("10.0.0.1", 1), "server": ("testserver", 80)}
    communicator = ApplicationCommunicator(application, scope)
    start = await communicator.receive_output(10)
    assert start["status"] == 413, (route, method, start)
