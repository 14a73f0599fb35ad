"""Every HTTP route, walked from the URLconf: anonymous users are refused, bob never reads,
writes or steers with alice's data, session writes need the CSRF token, and no client field
chooses a model, a file path or code to run. The table in routes.py must name exactly the
routes and methods the URLconf serves, so a route added without an entry fails here."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token

from steering.serving import runtime
from steering.chat.native import GENERATION_FIELDS
from steering.models import Feedback, InteractionLog, PreferenceProfile, ProfileUpdate, VectorSet
from steering.serving import runtime
from tests.conftest import PASSWORD
from tests.security.conftest import SECRET, alices_data_snapshot, hostile_fields, tiny_gguf_file, tiny_vector_file
from tests.security.routes import (
    ROUTES,
    WEBSOCKET_ROUTES,
    WRITES,
    fill,
    foreign_requests,
    http_routes,
    requests_of,
    view_methods,
    websocket_routes,
)

pytestmark = pytest.mark.django_db

# Function views whose methods cannot be read from a class.
FUNCTION_VIEW_METHODS = {"": {"GET"}, "favicon.ico": {"GET"}, "metrics": {"GET"}, "accounts/signup/": {"GET", "POST"}, "chat/": {"GET"},
                         "chat/<int:conversation_id>/": {"GET"}, "profile/": {"GET"}}


def values(world, tmp_path) -> dict:
    return {
        "set": world.private.pk, "shared": world.shared.pk, "update": world.update.pk,
        "interaction": world.interaction.pk, "unrated": world.unrated.pk, "feedback": world.feedback.pk, "conversation": world.conversation.pk, "password": PASSWORD,
        "vector_file": SimpleUploadedFile("v.safetensors", tiny_vector_file(tmp_path)),
        "gguf_file": SimpleUploadedFile("v.gguf", tiny_gguf_file(tmp_path)),
        "model": runtime.site_model_id(),
    }


def send(client, route: str, method: str, url: str, payload):
    """One request as a browser or a script would send it: JSON to the API, multipart for
    uploads, form-encoded to pages."""
    call = getattr(client, method.lower())
    if payload is None:
        return call(url)
    if ROUTES[route].multipart or not route.startswith(("api/", "v1/")):
        return call(url, payload)
    return call(url, json.dumps(payload), content_type="application/json")


def row_counts() -> dict:
    models = [VectorSet, PreferenceProfile, ProfileUpdate, InteractionLog, Feedback, Token]
    from django.contrib.auth import get_user_model

    return {m.__name__: m.objects.count() for m in [*models, get_user_model()]}


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


# -- the table covers the URLconf -------------------------------------------------------------


def test_the_table_names_every_route_of_the_urlconf():
    site_routes = {route for route in http_routes() if not route.startswith("admin/")}
    assert set(ROUTES) == site_routes, "add the new route to tests/security/routes.py"
    assert websocket_routes() == WEBSOCKET_ROUTES


def test_the_table_names_every_method_each_view_serves():
    for route, pattern in http_routes().items():
        if route.startswith("admin/"):
            continue
        served = view_methods(pattern) or set(FUNCTION_VIEW_METHODS[route])
        if route == "accounts/login/":
            served.discard("PUT")  # FormView's alias of POST
        assert served == set(ROUTES[route].methods), route


def test_every_write_has_a_payload_to_try():
    for route, spec in ROUTES.items():
        for method, (_, payload) in spec.methods.items():
            assert method not in WRITES - {"DELETE"} or payload is not None, (route, method)


# -- anonymous users ---------------------------------------------------------------------------


@pytest.mark.parametrize("route, method", requests_of({"user", "page"}))
def test_anonymous_users_are_refused(world, tmp_path, route, method):
    before = row_counts()
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    response = send(Client(), route, method, url, payload)
    if ROUTES[route].access == "page":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    else:
        scheme = "Bearer" if route.startswith("v1/") else "Token"  # what OpenAI clients send
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith(scheme)
    assert SECRET not in response.content.decode(errors="replace")
    assert row_counts() == before


@pytest.mark.parametrize("route, method", requests_of({"public"}, {"GET"}))
def test_public_pages_show_anonymous_users_nothing_private(world, tmp_path, route, method):
    url, _ = fill(ROUTES[route].methods[method], values(world, tmp_path))
    response = Client().get(url)
    assert response.status_code in (200, 503 if route == "api/health/" else 200)
    assert SECRET not in response.content.decode(errors="replace")


@pytest.mark.parametrize("route, method", requests_of({"staff"}))
def test_staff_routes_refuse_everyone_else(world, tmp_path, route, method):
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    for client in (Client(), logged_in(world.bob)):
        response = send(client, route, method, url, payload)
        assert response.status_code in (401, 403) or response["Location"].startswith("/accounts/login/")
    assert send(logged_in(world.charlie), route, method, url, payload).status_code == 200


# -- bob and alice's objects ----------------------------------------------------------------------


@pytest.mark.parametrize("route, method, url, payload", foreign_requests())
def test_bob_gets_404_for_alices_objects_and_changes_nothing(world, tmp_path, as_bob, route, method, url, payload):
    before = alices_data_snapshot(world)
    client = as_bob if route.startswith("api/") else logged_in(world.bob)
    url, payload = fill((url, payload), values(world, tmp_path))
    response = send(client, route, method, url, payload)
    # 404, never 403: a 403 would confirm that the object exists.
    assert response.status_code == 404, response.content
    assert SECRET not in response.content.decode(errors="replace")
    assert alices_data_snapshot(world) == before
    assert not InteractionLog.objects.filter(user=world.bob).exists()  # nothing was generated


@pytest.mark.parametrize("route, method", requests_of({"public", "user", "page"}, {"GET"}))
def test_bobs_own_reads_never_show_alices_data(world, tmp_path, route, method):
    url, _ = fill(ROUTES[route].methods[method], values(world, tmp_path))
    if any(url == fill(u, values(world, tmp_path)) for _, u, _ in ROUTES[route].foreign):
        pytest.skip("names alice's object: the 404 test covers it")
    response = logged_in(world.bob).get(url)
    # 302: the log-in and sign-up pages send a logged-in user home.
    assert response.status_code in (200, 302, 503 if route == "api/health/" else 200), response.content[:300]
    assert SECRET not in response.content.decode(errors="replace")


@pytest.mark.django_db(transaction=True)
def test_bobs_chat_is_steered_by_his_profile_never_alices(world, as_bob):
    # alice's profile on the shared set holds formality 0.9; bob has none.
    response = as_bob.post("/api/chat/", {"prompt": "hello", "max_new_tokens": 2}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["preferences_applied"] == {}
    assert InteractionLog.objects.get(user=world.bob).strengths == {}


# -- CSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route, method", requests_of({"public", "user"}, WRITES))
def test_session_writes_without_the_csrf_token_are_refused(world, tmp_path, route, method):
    client = logged_in(world.alice, enforce_csrf_checks=True)
    before, snapshot = row_counts(), alices_data_snapshot(world)
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    response = send(client, route, method, url, payload)
    assert response.status_code == 403 and b"CSRF" in response.content, (response.status_code, response.content[:200])
    assert row_counts() == before and alices_data_snapshot(world) == snapshot
    assert client.get("/api/profile/").status_code == 200  # still logged in: the logout did not happen


# -- fields that would choose a model, a file or code -------------------------------------------------


@pytest.mark.parametrize("route, method", requests_of({"user"}, WRITES - {"DELETE"}))
def test_hostile_fields_are_ignored_by_every_write(world, tmp_path, as_alice, settings, route, method):
    model_setting = settings.STEERLAB_MODEL
    url, payload = fill(ROUTES[route].methods[method], values(world, tmp_path))
    payload = {**hostile_fields(tmp_path), **payload}  # the endpoint's own fields stay valid
    response = send(as_alice, route, method, url, payload)
    assert response.status_code < 400, (response.status_code, response.content[:300])
    assert not (tmp_path / "hostile").exists()  # nothing read, written or run there
    assert settings.STEERLAB_MODEL == model_setting and runtime.site_model_id() == str(settings.STEERLAB_MODEL)
    for vector_set in VectorSet.objects.all():
        assert vector_set.model_id == runtime.site_model_id()
        assert vector_set.owner_id in (None, world.alice.pk)
        assert not vector_set.file or vector_set.file.name.startswith("vectors/")
    for log in InteractionLog.objects.all():
        assert set(log.params) <= set(GENERATION_FIELDS)
    assert not type(world.alice).objects.filter(is_staff=True).exclude(pk=world.charlie.pk).exists()
    assert settings.SECRET_KEY not in response.content.decode(errors="replace")


def test_an_upload_is_a_file_never_a_path_on_the_server(world, as_alice):
    response = as_alice.post("/api/vector-sets/upload/", {"name": "x", "file": "/etc/passwd"}, format="json")
    assert response.status_code == 400 and "file" in response.json()
    assert not VectorSet.objects.filter(name="x").exists()


def test_an_uploaded_file_name_never_chooses_where_it_is_stored(world, tmp_path, as_alice, settings):
    upload = SimpleUploadedFile("../../../escape.safetensors", tiny_vector_file(tmp_path))
    response = as_alice.post("/api/vector-sets/upload/", {"name": "x", "file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    stored = VectorSet.objects.get(pk=response.json()["id"]).file
    assert stored.name.startswith("vectors/upload-") and ".." not in stored.name
    assert not list(tmp_path.rglob("escape*"))


def test_an_oversized_upload_is_refused_before_its_body_is_read(world, as_alice, settings):
    settings.STEERLAB_MAX_UPLOAD_BYTES = 2048
    upload = SimpleUploadedFile("big.safetensors", b"\0" * 200_000)
    response = as_alice.post("/api/vector-sets/upload/", {"name": "big", "file": upload}, format="multipart")
    assert response.status_code == 413 and "2048" in response.json()["detail"]
    assert not VectorSet.objects.filter(name="big").exists()
