"""NUL characters, which PostgreSQL text columns and parameters refuse (SQLite takes them), in
every place a client controls: each string and key of each route's payload, its query
parameters, the token header and the session cookie. Each must get a 4xx with a message, or
be ignored, never a 500, and a refused write leaves no row behind. The suite runs on both
databases (.ci/run), so this is where a PostgreSQL-only 500 shows up."""

from __future__ import annotations

import pytest

from steering.serving import runtime
from tests.security.routes import ROUTES, WRITES, fill, requests_of
from tests.security.test_routes import logged_in, row_counts, send, values

pytestmark = pytest.mark.django_db

NUL = "\x00"


def poisoned(payload):
    """The payload with NUL added to every string value and every key below the top level
    (a dimension name in strengths); files and numbers kept."""
    if isinstance(payload, str):
        return payload + NUL
    if isinstance(payload, dict):
        return {poisoned(key): poisoned(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [poisoned(value) for value in payload]
    return payload


def poisoned_values(payload: dict) -> dict:
    return {key: poisoned(value) for key, value in payload.items()}


def poisoned_field_names(payload: dict) -> dict:
    return {key + NUL: value for key, value in payload.items()}


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def assert_answered(response, before: dict | None = None):
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if before is not None and response.status_code >= 400:
        assert row_counts() == before  # a refused write wrote nothing


@pytest.fixture
def world(world):
    runtime.site_model()  # loaded, so /api/health/ answers 200 rather than 503 "loading"
    return world


def has_text(payload) -> bool:
    """Whether poisoned_values changes anything in it."""
    return poisoned_values(payload) != payload


@pytest.mark.parametrize("route, method", requests_of({"public", "user", "page"}, WRITES - {"DELETE"}))
def test_nul_in_any_value_of_a_write_is_refused_with_a_message(world, tmp_path, route, method):
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    before = row_counts()
    response = send(logged_in(world.alice), route, method, url, poisoned_values(payload))
    assert_answered(response, before)
    if route.startswith("api/") and has_text(payload):
        assert response.status_code == 400, (route, response.status_code, response.content[:300])
        assert response.json()  # says which field


@pytest.mark.parametrize("route, method", requests_of({"public", "user", "page"}, WRITES - {"DELETE"}))
def test_nul_in_a_field_name_is_an_unknown_field(world, tmp_path, route, method):
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    before = row_counts()
    assert_answered(send(logged_in(world.alice), route, method, url, poisoned_field_names(payload)), before)


@pytest.mark.parametrize("route, method", requests_of({"public", "user", "page"}))
@pytest.mark.parametrize("query", ["vector_set=1%00", "dimension=formality%00", "page=1%00", "format=json%00", "%00=%00"])
def test_nul_in_the_query_string_is_refused_cleanly(world, tmp_path, route, method, query):
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    before = row_counts() if method in WRITES else None
    response = send(logged_in(world.alice), route, method, with_query(url, query), payload)
    assert_answered(response, before)


@pytest.mark.parametrize("route, method", requests_of({"user"}, {"GET"}))
def test_a_token_with_nul_is_refused_as_unauthenticated(world, tmp_path, route, method):
    from django.test import Client

    url, _ = fill(ROUTES[route].methods[method], values(world, tmp_path))
    response = Client().get(url, HTTP_AUTHORIZATION=f"Token abc{NUL}def")
    assert response.status_code == 401, (response.status_code, response.content[:300])


@pytest.mark.parametrize("route, method", requests_of({"page", "user"}, {"GET"}))
def test_a_session_cookie_with_nul_is_an_anonymous_visitor(world, tmp_path, route, method):
    from django.conf import settings
    from django.test import Client

    url, _ = fill(ROUTES[route].methods[method], values(world, tmp_path))
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = f"abc{NUL}def"
    response = client.get(url)
    assert response.status_code in (302, 401, 403), (response.status_code, response.content[:300])
