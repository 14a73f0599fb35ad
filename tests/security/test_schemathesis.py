"""schemathesis against /api/schema/: every operation of the OpenAPI schema, fed data that fits
the schema and data that does not, through the real WSGI application, authenticated as a
normal user with a token. No answer may be a 5xx, a documented answer must match its schema
and content type, and data that breaks the schema must be refused with a 4xx.

Examples are derandomized and bounded per operation (SCHEMATHESIS_EXAMPLES, 16), so a run is
repeatable and stays within seconds. /api/chat/ generates text, so it runs apart, with fewer
examples, on the tiny site model. Undocumented status codes (DRF's 400/401/404 bodies, which
drf-spectacular does not list) are not checked; their bodies are checked by the tests of each
endpoint instead."""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from steering.serving import runtime

# About two minutes on a shared two-core machine: some two thousand requests.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "16"))
CHAT_EXAMPLES = int(os.environ.get("SCHEMATHESIS_CHAT_EXAMPLES", "6"))
# Not negative_data_rejection: DRF ignores fields it does not know and reads an empty query
# parameter as an omitted one, both on purpose (tests/security/test_routes.py relies on the
# first: fields naming a model or a path are ignored). Negative cases still run, for 5xx.
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Generation-heavy: run apart with fewer examples.
CHAT = "/api/chat/"


@pytest.fixture
def api(world, monkeypatch, settings):
    """The schema as /api/schema/ serves it, bound to the WSGI application, and alice's token."""
    from rest_framework.throttling import ScopedRateThrottle

    # Thousands of requests from one user: the throttles would answer most of them 429.
    # (tests/security/test_throttles.py checks that each throttle answers 429, not 5xx.)
    rates = {scope: "100000/min" for scope in ("chat", "compute", "login", "login_address", "login_account", "signup")}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    runtime.site_model()  # loaded, so /api/health/ answers 200 rather than 503 "loading"
    # As Django's test client does: the WSGI handler would close the test's database
    # connection after each request, and with it the transaction the test runs in.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
        yield schema, {"Authorization": f"Token {Token.objects.create(user=world.alice).key}"}
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def operations(schema, *, chat: bool):
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.path == CHAT) == chat:
            found.append(operation)
    return found


def fuzz(operation, headers: dict, examples: int, adjust=lambda case: None) -> list[str]:
    """Run `examples` positive and `examples` negative cases of one operation; return the
    failures, each with the request that caused it."""
    failures = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            adjust(case)
            try:
                case.call_and_validate(headers=headers, checks=CHECKS)
            except FailureGroup as exc:
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")

        try:
            run()
        except Unsatisfiable:
            # Nothing to break: an operation without parameters or body has no negative case.
            assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_every_operation_answers_without_5xx_and_as_documented(api):
    schema, headers = api
    found = operations(schema, chat=False)
    assert len(found) >= 20  # the walk really reaches the API
    failures = [failure for operation in found for failure in fuzz(operation, headers, EXAMPLES)]
    assert not failures, "\n\n".join(failures[:10])


def small_generation(case) -> None:
    """Keep each chat to a few tokens: generation is not what is under test here."""
    if isinstance(case.body, dict):
        for field in ("max_new_tokens", "max_length"):
            if isinstance(case.body.get(field), int) and 4 < case.body[field] <= 10**6:
                case.body[field] = 4


@pytest.mark.django_db(transaction=True)  # a chat runs its database work on other threads
def test_chat_answers_without_5xx_and_as_documented(api):
    schema, headers = api
    (chat,) = operations(schema, chat=True)
    failures = fuzz(chat, headers, CHAT_EXAMPLES, adjust=small_generation)
    assert not failures, "\n\n".join(failures[:10])
