"""What the browser tests share: a live daphne server (ChannelsLiveServerTestCase), Debian's
chromium driven by Playwright, users logged in by their session cookie, and page boxes."""

from __future__ import annotations

import contextlib

from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import override_settings

from steering.services import vector_sets
from tests.api.conftest import make_vectors
from tests.browser import CHROMIUM

PASSWORD = "a long enough passphrase 42"


class BrowserTestCase(ChannelsLiveServerTestCase):
    serve_static = True
    dimensions = ("formality", "cost")
    # Settings the server process runs with: enabled before it is forked, so it inherits them.
    server_settings: dict = {}

    @classmethod
    def setUpClass(cls):
        cls._server_settings = override_settings(**cls.server_settings)
        cls._server_settings.enable()
        # The server is forked from this process: an SQLite connection open here would be shared
        # by both, and the database file corrupts ("disk image is malformed") on the first flush.
        connections.close_all()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._server_settings.disable()

    def setUp(self):
        for name in self.dimensions:
            vector_sets.dimension_import_default(name=name)
        self.vector_set = vector_sets.vector_set_register(vectors=make_vectors(list(self.dimensions)), name="shared")

    def user(self, username: str, **extra):
        return get_user_model().objects.create_user(username, f"{username}@example.org", PASSWORD, **extra)

    @contextlib.contextmanager
    def browser(self):
        """Yields (new_page, problems): new_page(user=None, width=1280, height=800) opens a page,
        logged in as `user` when given; problems collects page errors, console
        errors and dialogs (an alert() from model output would be one).

        The browser's event loop is stopped when the block ends, before the test's database flush
        (Django refuses ORM calls while an event loop runs in the thread)."""
        from playwright.sync_api import sync_playwright

        problems: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:

                def new_page(user=None, width=1280, height=800):
                    context = browser.new_context(viewport={"width": width, "height": height})
                    page = context.new_page()
                    page.set_default_timeout(20_000)
                    if user is not None:
                        # Through the form, in the server: a session row written by this process
                        # beside the forked server's SQLite connection is read back as corrupt.
                        page.goto(self.live_server_url + "/accounts/login/")
                        page.fill("#id_username", user.get_username())
                        page.fill("#id_password", PASSWORD)
                        page.click("button[type=submit]")
                        page.wait_for_selector(".nav-user")
                    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
                    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
                    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
                    return page

                yield new_page, problems
            finally:
                browser.close()


def box(page, selector: str) -> dict:
    """The element's box in CSS pixels (x, y, width, height), asserting it is laid out."""
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not laid out"
    return found


def overlaps(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
    )


__all__ = ["BrowserTestCase", "PASSWORD", "box", "make_vectors", "overlaps"]
