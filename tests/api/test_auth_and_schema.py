import pytest
import yaml
from drf_spectacular.validation import validate_schema

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_token_authenticates_api_calls(client, alice, shared_set):
    response = client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    profile = client.get("/api/profile/", HTTP_AUTHORIZATION=f"Token {token}")
    assert profile.status_code == 200 and profile.json()["vector_set"] == shared_set.pk
    assert client.get("/api/profile/", HTTP_AUTHORIZATION="Token wrong").status_code == 401


def test_a_wrong_password_gets_no_token(client, alice):
    response = client.post("/api/auth/token/", {"username": "alice", "password": "nope"})
    assert response.status_code == 400 and "token" not in response.json()


def test_session_writes_need_the_csrf_token(alice, shared_set):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.patch("/api/profile/", {"strengths": {"cost": 0.5}}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_the_openapi_schema_validates_and_names_every_endpoint(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate_schema(schema)  # against the OpenAPI 3.0 JSON schema
    for path in ["/api/chat/", "/api/health/", "/api/profile/", "/api/vector-sets/", "/api/vector-sets/upload/",
                 "/api/interactions/{id}/feedback/", "/api/auth/token/", "/api/dimensions/"]:
        assert path in schema["paths"], path
    chat = schema["paths"]["/api/chat/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["$ref"].endswith("ChatRequest")
    assert {"prompt", "preferences", "max_length", "session_id"} <= set(schema["components"]["schemas"]["ChatRequest"]["properties"])
    # A GGUF import is ready at once (201) or measured in the background (202), as computing is.
    assert {"201", "202", "400"} <= set(map(str, schema["paths"]["/api/vector-sets/import-gguf/"]["post"]["responses"]))


def test_the_docs_page_and_api_root_load(client):
    assert b"swagger" in client.get("/api/docs/").content.lower()
    root = client.get("/api/").json()
    assert root["endpoints"]["chat"].endswith("/api/chat/") and root["websocket"].startswith("ws://")
