"""The chat page in a real browser (Debian's chromium driven by Playwright) against a live
daphne server with websockets: sign up, move a slider, chat with streaming, stop an answer.

The live server runs in a child process forked by ChannelsLiveServerTestCase (multiprocessing's
default 'fork' on Linux), so it inherits the settings overridden in setUpClass before the fork
(MEDIA_ROOT, where the vector file lives) and shares the on-disk SQLite test database. The
embedded model loads in that process on the first message (~20-30 s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.test import override_settings

from steering import services
from tests.api.conftest import make_vectors

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output"
MODEL_TIMEOUT_MS = 180_000  # the first answer waits for the model to load in the server process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is missing: pip install playwright"
    ),
]


class ChatPageTest(ChannelsLiveServerTestCase):
    serve_static = True

    @classmethod
    def setUpClass(cls):
        # Before super() forks the server, so that both processes see the same vector files.
        cls._media = tempfile.mkdtemp(prefix="steerlab-browser-media-")
        cls._settings = override_settings(MEDIA_ROOT=cls._media)
        cls._settings.enable()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._settings.disable()
        shutil.rmtree(cls._media, ignore_errors=True)

    def setUp(self):
        # After the fork: torch's thread pools are not forked half-initialised into the server.
        for name in ("formality", "cost"):
            services.dimension_import_default(name=name)
        services.vector_set_register(vectors=make_vectors(["formality", "cost"]), name="shared")

    def test_it_signs_up_steers_streams_and_stops(self):
        from playwright.sync_api import expect, sync_playwright

        # The browser's event loop is stopped when this block ends, before tearDown's database
        # flush (Django refuses ORM calls while an event loop runs in the thread).
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(20_000)
                self.run_scenario(page, expect)
            finally:
                browser.close()

    def run_scenario(self, page, expect):
        url = self.live_server_url

        # Sign up through the form.
        page.goto(url + "/accounts/signup/")
        page.fill("#id_username", "dora")
        page.fill("#id_email", "dora@example.org")
        page.fill("#id_password1", "a long enough passphrase 42")
        page.fill("#id_password2", "a long enough passphrase 42")
        page.click("button[type=submit]")
        expect(page.locator(".nav-user")).to_have_text("dora")

        # The chat page: one slider per dimension, neutral at first.
        page.click("nav >> text=Chat")
        expect(page).to_have_url(url + "/chat/")
        expect(page.locator(".pref-slider")).to_have_count(2)
        expect(page.locator("#summary-cost")).to_have_text("Neutral")
        expect(page.locator("#pref-mode")).to_have_attribute("data-mode", "select")

        # Move a slider: the summary changes to the server's, and the profile is saved.
        page.locator("#pref-cost").fill("-35")
        expect(page.locator("#summary-cost")).to_have_text("35 % Budget")
        page.goto(url + "/profile/")
        expect(page.locator('#profile-strengths tr[data-dimension="cost"] .profile-summary')).to_have_text(
            "35 % Budget"
        )
        expect(page.locator("#profile-history .history-entry")).to_have_count(1)
        page.goto(url + "/chat/")
        expect(page.locator("#summary-cost")).to_have_text("35 % Budget")
        expect(page.locator("#chat-form")).to_have_attribute("data-connected", "true")

        # Send a message: tokens arrive before the answer is complete.
        expect(page.locator("#chat-stop")).to_be_hidden()
        page.fill("#chat-prompt", "Suggest a place for dinner.")
        page.click("#chat-send")
        expect(page.locator("#chat-stop")).to_be_visible()
        answer = page.locator(".chat-assistant .chat-text").last
        page.wait_for_function(
            "() => { const el = document.querySelector('.chat-assistant .chat-text.streaming');"
            " return el && el.textContent.length > 0; }",
            timeout=MODEL_TIMEOUT_MS,
        )
        partial = answer.text_content()
        expect(page.locator(".chat-assistant .chat-text.streaming")).to_have_count(0, timeout=MODEL_TIMEOUT_MS)
        complete = answer.text_content()
        assert 0 < len(partial) < len(complete), (partial, complete)
        steering = page.locator(".chat-assistant .chat-steering").last
        expect(steering).to_have_text("35 % Budget")

        # The new conversation is in the URL and the list.
        expect(page).to_have_url(re.compile(r"/chat/\d+/$"))
        conversation_path = page.url.removeprefix(url)
        expect(page.locator(f'#conversation-list a[href="{conversation_path}"]')).to_have_text(
            "Suggest a place for dinner."
        )

        # A long answer, stopped once it has started: it ends early, marked as stopped.
        page.fill("#chat-prompt", "Write a very long and detailed story about a dragon who learns to cook.")
        page.click("#chat-send")
        page.wait_for_function(
            "() => { const el = document.querySelector('.chat-assistant .chat-text.streaming');"
            " return el && el.textContent.length > 0; }",
            timeout=MODEL_TIMEOUT_MS,
        )
        page.click("#chat-stop")
        expect(page.locator(".chat-message.chat-stopped")).to_have_count(1, timeout=15_000)
        expect(page.locator(".chat-assistant .chat-steering").last).to_have_text("35 % Budget · stopped")
        expect(page.locator("#chat-stop")).to_be_hidden()

        # Both turns were stored in the conversation: a reload shows them.
        page.reload()
        expect(page.locator(".chat-assistant")).to_have_count(2)
        expect(page.locator(".chat-assistant .chat-steering").first).to_have_text("35 % Budget")

        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
