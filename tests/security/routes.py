"""Every route of the site, read from the URLconf, and the table that says how each one is
protected. The tests assert that the table and the URLconf name the same routes and methods,
so a route or a method added later without an entry here fails the suite.

A request is (method, url, payload); urls and payloads are templates filled from the `world`
fixture: {set} alice's private vector set, {shared} the shared set, {update} her profile
change, {interaction} her interaction, {feedback} her feedback, {conversation} her conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from django.urls import URLPattern, URLResolver, get_resolver

from steerlab_site.routing import websocket_urlpatterns

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def flatten(patterns, prefix: str = ""):
    """(route, URLPattern) for every pattern, includes expanded: route is the concatenated
    pattern text, e.g. "api/vector-sets/<int:pk>/"."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from flatten(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def http_routes() -> dict[str, URLPattern]:
    return dict(flatten(get_resolver().url_patterns))


def websocket_routes() -> set[str]:
    return {route for route, _ in flatten(websocket_urlpatterns)}


def view_methods(pattern: URLPattern) -> set[str] | None:
    """The HTTP methods a class-based view implements (None for a function view)."""
    cls = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
    if cls is None:
        return None
    return {m.upper() for m in cls.http_method_names if hasattr(cls, m) and m not in ("options", "head")}


@dataclass
class Route:
    """How one route is protected.

    access: "public" (anyone), "user" (logged in), "page" (logged in, a page: anonymous
        users are sent to the login page instead of getting 401), or "staff" (staff only).
    methods: method → (url template, payload template or None). Every write method needs a
        valid payload, which the CSRF and hostile-field tests send.
    foreign: requests that name alice's objects; bob must get 404 for each, learn nothing and
        change nothing.
    throttle: the budget its writes spend (a DEFAULT_THROTTLE_RATES scope): once spent, each
        write answers 429 with Retry-After and changes nothing (tests/security/test_limits.py).
    """

    access: str
    methods: dict[str, tuple[str, dict | None]]
    foreign: list[tuple[str, str, dict | None]] = field(default_factory=list)
    multipart: bool = False
    throttle: str | None = None


CHOICE = {"dimension": "formality", "low": -1.0, "high": 1.0, "round": 0, "rounds": 3, "choice": "a"}
V1_CHAT = {"model": "{model}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "user": "end-user"}
SIGNUP = {"username": "dora", "password1": "a long passphrase 42!", "password2": "a long passphrase 42!"}

ROUTES: dict[str, Route] = {
    "": Route("public", {"GET": ("/", None)}),
    "favicon.ico": Route("public", {"GET": ("/favicon.ico", None)}),
    "accounts/signup/": Route(
        "public", {"GET": ("/accounts/signup/", None), "POST": ("/accounts/signup/", SIGNUP)}, throttle="signup"
    ),
    "accounts/login/": Route("public", {
        "GET": ("/accounts/login/", None),
        "POST": ("/accounts/login/", {"username": "alice", "password": "{password}"}),
    }, throttle="login"),
    "accounts/logout/": Route("public", {"POST": ("/accounts/logout/", {})}),
    "metrics": Route("staff", {"GET": ("/metrics", None)}),
    "api/": Route("public", {"GET": ("/api/", None)}),
    "api/auth/token/": Route(
        "public", {"POST": ("/api/auth/token/", {"username": "alice", "password": "{password}"})}, throttle="login"
    ),
    "api/health/": Route("public", {"GET": ("/api/health/", None)}),
    "api/schema/": Route("public", {"GET": ("/api/schema/", None)}),
    "api/docs/": Route("public", {"GET": ("/api/docs/", None)}),
    "api/chat/": Route(
        "user", {"POST": ("/api/chat/", {"prompt": "hi", "max_new_tokens": 2})},
        foreign=[("POST", "/api/chat/", {"prompt": "hi", "max_new_tokens": 2, "vector_set": "{set}"})],
        throttle="chat",
    ),
    "api/dimensions/": Route("user", {"GET": ("/api/dimensions/", None)}),
    "api/dimensions/<slug:name>/": Route("user", {"GET": ("/api/dimensions/formality/", None)}),
    "api/vector-sets/": Route("user", {
        "GET": ("/api/vector-sets/", None),
        "POST": ("/api/vector-sets/", {"name": "new", "dimensions": ["formality"]}),
    }, throttle="compute"),
    "api/vector-sets/upload/": Route(
        "user", {"POST": ("/api/vector-sets/upload/", {"name": "uploaded", "file": "{vector_file}"})}, multipart=True,
        throttle="compute",
    ),
    "api/vector-sets/<int:pk>/": Route(
        "user",
        {"GET": ("/api/vector-sets/{set}/", None), "DELETE": ("/api/vector-sets/{set}/", {})},
        foreign=[("GET", "/api/vector-sets/{set}/", None), ("DELETE", "/api/vector-sets/{set}/", None)],
    ),
    "api/vector-sets/<int:pk>/compute/": Route(
        "user", {"POST": ("/api/vector-sets/{set}/compute/", {})},
        foreign=[("POST", "/api/vector-sets/{set}/compute/", {})],
        throttle="compute",
    ),
    "api/vector-sets/<int:pk>/download/": Route(
        "user", {"GET": ("/api/vector-sets/{set}/download/", None)},
        foreign=[("GET", "/api/vector-sets/{set}/download/", None)],
    ),
    "api/profile/": Route(
        "user",
        {
            "GET": ("/api/profile/", None),
            "PUT": ("/api/profile/", {"strengths": {"formality": 0.5}}),
            "PATCH": ("/api/profile/", {"strengths": {"cost": -0.5}}),
        },
        foreign=[
            ("GET", "/api/profile/?vector_set={set}", None),
            ("PUT", "/api/profile/?vector_set={set}", {"strengths": {"formality": -1}}),
            ("PATCH", "/api/profile/?vector_set={set}", {"strengths": {"formality": -1}}),
        ],
    ),
    "api/profile/history/": Route(
        "user", {"GET": ("/api/profile/history/", None)},
        foreign=[("GET", "/api/profile/history/?vector_set={set}", None)],
    ),
    "api/profile/history/<int:pk>/undo/": Route(
        "user", {"POST": ("/api/profile/history/{update}/undo/", {})},
        foreign=[("POST", "/api/profile/history/{update}/undo/", {})],
    ),
    "api/calibrate/start/": Route(
        "user", {"GET": ("/api/calibrate/start/?dimension=formality", None)},
        foreign=[("GET", "/api/calibrate/start/?dimension=formality&vector_set={set}", None)],
    ),
    "api/calibrate/choose/": Route(
        "user", {"POST": ("/api/calibrate/choose/", CHOICE)},
        foreign=[("POST", "/api/calibrate/choose/", {**CHOICE, "round": 2, "vector_set": "{set}"})],
    ),
    "api/conversations/": Route("user", {"GET": ("/api/conversations/", None)}),
    "api/conversations/<int:pk>/": Route(
        "user",
        {
            "GET": ("/api/conversations/{conversation}/", None),
            "PATCH": ("/api/conversations/{conversation}/", {"title": "renamed"}),
            "DELETE": ("/api/conversations/{conversation}/", {}),
        },
        foreign=[
            ("GET", "/api/conversations/{conversation}/", None),
            ("PATCH", "/api/conversations/{conversation}/", {"title": "bob's now"}),
            ("DELETE", "/api/conversations/{conversation}/", None),
        ],
    ),
    "api/interactions/": Route("user", {"GET": ("/api/interactions/", None)}),
    "api/interactions/<int:pk>/": Route(
        "user", {"GET": ("/api/interactions/{interaction}/", None)},
        foreign=[("GET", "/api/interactions/{interaction}/", None)],
    ),
    "api/interactions/<int:pk>/feedback/": Route(
        "user", {"POST": ("/api/interactions/{unrated}/feedback/", {"thumbs": 1})},
        foreign=[("POST", "/api/interactions/{interaction}/feedback/", {"thumbs": 1, "text": "more casual"})],
        throttle="chat",
    ),
    "api/feedback/<int:pk>/": Route(
        "user", {"GET": ("/api/feedback/{feedback}/", None)}, foreign=[("GET", "/api/feedback/{feedback}/", None)]
    ),
    "chat/": Route("page", {"GET": ("/chat/", None)}),
    "chat/<int:conversation_id>/": Route(
        "page", {"GET": ("/chat/{conversation}/", None)}, foreign=[("GET", "/chat/{conversation}/", None)]
    ),
    "profile/": Route("page", {"GET": ("/profile/", None)}),
    "api/vector-sets/<int:pk>/export.gguf": Route(
        "user", {"GET": ("/api/vector-sets/{shared}/export.gguf?dimension=formality", None)},
        foreign=[("GET", "/api/vector-sets/{set}/export.gguf", None)],
    ),
    "api/vector-sets/import-gguf/": Route(
        "user", {"POST": ("/api/vector-sets/import-gguf/", {"name": "imported", "file": "{gguf_file}", "dimension": "mood"})},
        multipart=True,
    ),
    # /v1 speaks OpenAI's protocol: JSON bodies, Bearer tokens, and `model` chooses among the
    # entries of /v1/models only (the served model, the caller's vector sets), never a path.
    "v1/chat/completions": Route(
        "user", {"POST": ("/v1/chat/completions", V1_CHAT)},
        foreign=[("POST", "/v1/chat/completions", {**V1_CHAT, "steering": {"vector_set": "{set}"}})],
    ),
    "v1/models": Route("user", {"GET": ("/v1/models", None)}),
}

# The websocket's own table lives in test_websocket.py; this names what it covers.
WEBSOCKET_ROUTES = {"ws/chat/"}


def fill(template, values: dict):
    """A url or payload template with {names} replaced: a whole-string placeholder keeps the
    value's type (an id stays an int, a file stays a file)."""
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template[1:-1] in values:
            return values[template[1:-1]]
        return template.format(**values)
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(fill(value, values) for value in template)
    return template


def _param(route: str, *values):
    # A chat runs its database work on other threads, which see only committed rows.
    threaded = ("api/chat/", "v1/chat/completions", "v1/models")
    marks = [pytest.mark.django_db(transaction=True)] if route in threaded else []
    return pytest.param(route, *values, marks=marks, id="-".join([route, *[str(v) for v in values[:1]]]))


def requests_of(access: set[str], methods: set[str] | None = None):
    """pytest params (route, method) for every method of every route with one of `access`
    (and, given `methods`, one of those methods)."""
    return [
        _param(route, method)
        for route, spec in ROUTES.items() if spec.access in access
        for method in spec.methods if methods is None or method in methods
    ]


def foreign_requests():
    return [_param(route, *request) for route, spec in ROUTES.items() for request in spec.foreign]
