"""Every /admin/ route, walked from the URLconf (so a model or a custom view registered later
is covered too): staff only. Anonymous users and logged-in users who are not staff are sent
to the admin's log-in page, for reads and writes alike."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.security.routes import http_routes

pytestmark = pytest.mark.django_db

# The admin's log-in page is for everyone; its log-out sends a non-staff user to the index,
# which sends them on to the log-in page.
OPEN = {"admin/login/"}
INDEX_THEN_LOGIN = {"admin/logout/"}


def admin_url(route: str, object_id: int) -> str:
    """A concrete URL for an admin route: ids filled in, the app-list regex given an app."""
    url = re.sub(r"\^\(\?P<app_label>[^)]*\)/\$$", "steering/", route)
    url = re.sub(r"\(\?P<url>\.\*\)\$$", "no-such-page/", url)
    url = re.sub(r"<(\w+:)?\w+>", str(object_id), url)
    assert "<" not in url and "^" not in url, f"teach admin_url about {route}"
    return "/" + url


def admin_routes() -> list[str]:
    return sorted(route for route in http_routes() if route.startswith("admin/") and route not in OPEN)


def refused_to_login(response, route: str = "") -> bool:
    if route in INDEX_THEN_LOGIN and response.status_code == 302 and response["Location"] == "/admin/":
        return True
    return response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("route", admin_routes())
def test_admin_routes_are_staff_only(world, route):
    url = admin_url(route, world.private.pk)
    bob = Client()
    bob.force_login(world.bob)
    for client in (Client(), bob):
        assert refused_to_login(client.get(url), route), route
        assert refused_to_login(client.post(url, {"name": "x"}), route), route
    charlie = Client()
    charlie.force_login(world.charlie)
    assert not refused_to_login(charlie.get(url)), route


def test_the_admin_walk_covers_the_custom_vector_set_views():
    routes = admin_routes()
    assert len(routes) > 40
    for view in ("upload/", "<int:object_id>/download/", "<int:object_id>/preview/", "<int:object_id>/recompute/"):
        assert f"admin/steering/vectorset/{view}" in routes
