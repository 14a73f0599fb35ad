"""The chat page in a real browser (Debian's chromium driven by Playwright) against a live
daphne server with websockets: sign up, move a slider, chat with streaming, stop an answer.

The live server runs in a child process forked by ChannelsLiveServerTestCase (multiprocessing's
default 'fork' on Linux), so it inherits the settings overridden in setUpClass before the fork
(MEDIA_ROOT, where the vector file lives) and shares the on-disk SQLite test database. The
embedded model loads in that process on the first message (~20-30 s).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.conf import settings
from django.test import override_settings

from steering.models import Feedback, PreferenceProfile, ProfileUpdate
from steering.services import vector_sets
from tests.api.conftest import make_vectors
from tests.browser import BROWSER_MARKS, CHROMIUM

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output"
MODEL_TIMEOUT_MS = 180_000  # the first answer waits for the model to load in the server process

pytestmark = BROWSER_MARKS


class ChatPageTest(ChannelsLiveServerTestCase):
    serve_static = True

    @classmethod
    def setUpClass(cls):
        # Before super() forks the server, so that both processes see the same vector files.
        cls._media = tempfile.mkdtemp(prefix="steerlab-browser-media-")
        # LEARN's task runs inline in the server (no qcluster in this test), for real.
        # Short calibration answers keep the test quick; they are still streamed and compared.
        cls._settings = override_settings(
            MEDIA_ROOT=cls._media, Q_CLUSTER={**settings.Q_CLUSTER, "sync": True}, STEERLAB_CALIBRATE_NEW_TOKENS=16
        )
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
            vector_sets.dimension_import_default(name=name)
        vector_sets.vector_set_register(vectors=make_vectors(["formality", "cost"]), name="shared")

    def test_it_signs_up_steers_streams_and_stops(self):
        from playwright.sync_api import expect, sync_playwright

        # The browser's event loop is stopped when this block ends, before tearDown's database
        # flush (Django refuses ORM calls while an event loop runs in the thread).
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                self.console = []
                page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type != "log" else None)
                page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
                page.set_default_timeout(20_000)
                self.run_scenario(page, expect)
            finally:
                browser.close()

        # What the browser did, as the database holds it (after the browser's event loop).
        dora = PreferenceProfile.objects.get(user__username="dora")
        assert dora.mode == "calibrate" and dora.strengths["cost"] < -0.5
        learned = ProfileUpdate.objects.get(profile=dora, source="learn")
        assert (learned.old_strength, learned.new_strength, learned.undone) == (-0.35, -0.7, True)
        assert learned.feedback.thumbs == -1 and learned.feedback.text == "too expensive"
        choices = Feedback.objects.filter(user__username="dora").exclude(choice="")
        assert choices.count() == 2 and all(f.other_interaction_id for f in choices)
        assert {f.interaction.source for f in choices} == {"calibrate"}

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
        # The panel's script has run (it marks the body as it starts): a slider moved before
        # that would change nothing, as no listener would hear it yet.
        expect(page.locator("body")).to_have_attribute("data-steering-mode", "select")

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
        # Its first answer names it (test_conversations.py checks how), in the list and the head.
        link = page.locator(f'#conversation-list a[href="{conversation_path}"]')
        expect(link).to_have_count(1)
        page.wait_for_selector("#conversation-title[data-named]")
        expect(page.locator("#conversation-title")).to_have_text(link.text_content())

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

        # LEARN: switch the mode, then a thumbs down with a text moves the profile, visibly.
        page.check('input[name="pref-mode"][value="learn"]')
        expect(page.locator("#pref-mode")).to_have_attribute("data-mode", "learn")
        first = page.locator(".chat-assistant").first
        first.locator(".feedback-down").click()
        first.locator(".feedback-text").fill("too expensive")
        first.locator(".feedback-send").click()
        expect(first.locator(".feedback-outcome")).to_have_text(
            "Learned: cost 35 % Budget → 70 % Budget", timeout=60_000
        )
        expect(page.locator("#summary-cost")).to_have_text("70 % Budget")
        expect(page.locator("#pref-history .history-entry").first).to_contain_text("learned from feedback")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
        # ... and it can be undone.
        first.locator(".feedback-undo").click()
        expect(first.locator(".feedback-outcome")).to_have_text("Undone: your preferences are back where they were.")
        expect(page.locator("#summary-cost")).to_have_text("35 % Budget")

        # CALIBRATE: two rounds of two streamed answers, always preferring A (the Budget end).
        page.check('input[name="pref-mode"][value="calibrate"]')
        page.select_option("#calibrate-dimension", "cost")
        page.select_option("#calibrate-rounds-choice", "2")
        page.click("#calibrate-start")
        for round_number in (1, 2):
            expect(page.locator("#calibrate-round")).to_have_text(str(round_number))
            page.wait_for_function(
                "() => !document.querySelector('#calibrate-choices [data-choice=a]').disabled"
                " || /failed|lost|Could not/.test(document.getElementById('calibrate-status').textContent)",
                timeout=MODEL_TIMEOUT_MS,
            )
            status = page.locator("#calibrate-status").text_content()
            assert page.locator('#calibrate-choices [data-choice="a"]').is_enabled(), (status, self.console)
            assert page.locator("#calibrate-answer-a").text_content().strip()
            assert page.locator("#calibrate-answer-b").text_content().strip()
            page.click('#calibrate-choices [data-choice="a"]')
        expect(page.locator("#calibrate-result")).to_have_text(re.compile(r"^Calibrated: \d+ % Budget$"))
        expect(page.locator("#calibrate-box")).to_be_hidden()
        expect(page.locator("#pref-mode")).to_have_attribute("data-mode", "calibrate")
        expect(page.locator("#pref-history .history-entry").first).to_contain_text("calibration")
        # Calibration answers never land in the chat.
        expect(page.locator(".chat-assistant")).to_have_count(2)
