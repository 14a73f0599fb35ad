"""Choosing a vector set on the chat page (issue 27, item 10), in a real browser against a live
daphne server with the embedded model: the selector saves the choice, the sliders become the
chosen set's, the draft survives, the next answer is steered with that set, and the profile page
shows and offers the same choice."""

from __future__ import annotations

from django.conf import settings

from steering.models import InteractionLog, PreferenceProfile
from steering.services import vector_sets
from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase, make_vectors

pytestmark = BROWSER_MARKS

MODEL_TIMEOUT_MS = 420_000  # the first answer waits for the model to load in the server process


class VectorSetChoiceTest(BrowserTestCase):
    server_settings = {"STEERLAB_DEFAULT_NEW_TOKENS": 8, "Q_CLUSTER": {**settings.Q_CLUSTER, "sync": True}}

    def setUp(self):
        super().setUp()  # the default: formality and cost
        vector_sets.dimension_import_default(name="age")
        self.age_set = vector_sets.vector_set_register(vectors=make_vectors(["age"], seed=5), name="Age only")

    def test_choosing_a_set_changes_the_sliders_and_steers_the_next_answer(self):
        alice = self.user("alice")
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=1280, height=900)
            page.goto(self.live_server_url + "/chat/")
            select = page.locator("#vector-set-select")
            assert select.input_value() == str(self.vector_set.pk)
            assert sorted(page.locator(".pref-slider").evaluate_all("s => s.map(e => e.name)")) == ["cost", "formality"]
            page.fill("#chat-prompt", "Plan a birthday party.")

            select.select_option(str(self.age_set.pk))  # saved, then the page shows the set's own sliders
            page.wait_for_selector("#pref-age")
            assert page.locator(".pref-slider").evaluate_all("s => s.map(e => e.name)") == ["age"]
            assert page.locator("#vector-set-select").input_value() == str(self.age_set.pk)
            assert page.locator("#calibrate-dimension option").all_text_contents() == ["Age"]
            assert page.input_value("#chat-prompt") == "Plan a birthday party."  # the draft survived

            page.locator("#pref-age").fill("60")
            page.wait_for_function("() => document.getElementById('summary-age').textContent === '60 % Adults'")
            page.wait_for_selector("#chat-form[data-connected=true]")
            page.click("#chat-send")
            page.wait_for_selector(".chat-assistant .chat-text.streaming", timeout=MODEL_TIMEOUT_MS)
            page.wait_for_selector(".chat-assistant .chat-text.streaming", state="detached", timeout=MODEL_TIMEOUT_MS)
            assert page.locator(".chat-assistant .chat-steering").last.text_content().startswith("60 % Adults")

            # The profile page shows the same choice, and offers it.
            page.goto(self.live_server_url + "/profile/")
            assert page.locator("#vector-set-select").input_value() == str(self.age_set.pk)
            assert page.locator("#profile-strengths tr").count() == 2  # header and age
            assert not problems, problems

        answer = InteractionLog.objects.get(user=alice)
        assert answer.vector_set == self.age_set and answer.strengths == {"age": 0.6}
        assert PreferenceProfile.objects.get(user=alice, chosen_at__isnull=False).vector_set == self.age_set
