"""The API docs page and the site icon in a real browser (Debian's chromium, a live daphne
server): /v1 is documented beside /api/, grouped by domain, the page leads back to the app, and
no page asks for a file that is not there (the favicon was a 404 everywhere)."""

from __future__ import annotations

from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase

pytestmark = BROWSER_MARKS

PAGES = ["/", "/chat/", "/profile/", "/api/docs/", "/admin/", "/admin/steering/vectorset/", "/accounts/login/"]


class ApiDocsTest(BrowserTestCase):
    def test_the_docs_group_by_domain_include_v1_and_lead_back_to_the_app(self):
        erin = self.user("erin", is_staff=True, is_superuser=True)
        with self.browser() as (new_page, problems):
            page = new_page(erin)
            page.goto(self.live_server_url + "/api/docs/")
            page.wait_for_selector(".swagger-ui .opblock-tag")
            tags = [t.strip() for t in page.locator(".swagger-ui .opblock-tag h3 a span, .swagger-ui .opblock-tag .nostyle span").all_text_contents()]
            assert {"Chat", "Conversations", "Profile", "Vector sets", "OpenAI-compatible (/v1)"} <= set(tags), tags
            assert "api" not in tags
            assert page.locator('.swagger-ui .opblock-summary-path[data-path="/v1/chat/completions"]').count() == 1
            # The way back.
            page.click(".docs-header >> text=Chat")
            page.wait_for_url(self.live_server_url + "/chat/")
        assert problems == []

    def test_no_page_requests_a_missing_file(self):
        erin = self.user("erin", is_staff=True, is_superuser=True)
        with self.browser() as (new_page, problems):
            page = new_page(erin)
            missing = []
            page.on("response", lambda r: r.status >= 400 and missing.append(f"{r.status} {r.url}"))
            for path in PAGES:
                page.goto(self.live_server_url + path)
                page.wait_for_load_state("networkidle")
            # What a browser asks for by itself, with no icon link on the page.
            icon = page.goto(self.live_server_url + "/favicon.ico")
            assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        assert missing == []
        assert problems == []
