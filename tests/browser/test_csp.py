"""The Content-Security-Policy breaks no page: Debian's chromium, driven by Playwright, opens each
page of the site as a staff user against a live daphne server and reports every violation the
browser logs. Nothing here generates, so the model is never loaded."""

from __future__ import annotations


import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model

from steering.services import vector_sets
from tests.api.conftest import make_vectors
from tests.browser import BROWSER_MARKS, CHROMIUM

PASSWORD = "a long enough passphrase 42"

pytestmark = BROWSER_MARKS

# Each page, and an element that only shows once its scripts have run.
PAGES = [
    ("/", "body"),
    ("/chat/", "#chat-form[data-connected=true]"),
    ("/profile/", "#profile-strengths"),
    ("/admin/", "#site-name"),
    ("/admin/steering/vectorset/", "#result_list"),
    ("/api/docs/", ".swagger-ui .info"),
    ("/api/", ".response-info"),
]


class ContentSecurityPolicyTest(ChannelsLiveServerTestCase):
    serve_static = True

    def setUp(self):
        get_user_model().objects.create_user("erin", "erin@example.org", PASSWORD, is_staff=True, is_superuser=True)
        vector_sets.dimension_import_default(name="formality")
        vector_sets.vector_set_register(vectors=make_vectors(["formality"]), name="shared")

    def test_no_page_breaks_the_policy(self):
        from playwright.sync_api import expect, sync_playwright

        violations: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.set_default_timeout(20_000)
                page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(f"{page.url}: {m.text}"))
                page.goto(self.live_server_url + "/accounts/login/")
                page.fill("#id_username", "erin")
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                expect(page.locator(".nav-user")).to_have_text("erin")
                for path, ready in PAGES:
                    response = page.goto(self.live_server_url + path)
                    assert response.status == 200, path
                    assert "default-src 'self'" in response.headers["content-security-policy"], path
                    expect(page.locator(ready).first).to_be_visible()
            finally:
                browser.close()

        assert violations == []
