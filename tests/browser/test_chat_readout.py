"""The readout in the chat page (Debian's chromium, a live daphne server, the embedded model):
gauges appear under an answer once it has streamed, one per dimension, with a per-token view
on demand; they are there again when the conversation is reopened, and the profile's
interaction table shows the steering and the readout."""

from __future__ import annotations

import torch
from django.conf import settings

from steering.engine.readout import ReadoutEnds
from steering.services import vector_sets
from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase, box, make_vectors

pytestmark = BROWSER_MARKS

MODEL_TIMEOUT_MS = 420_000  # the first answer waits for the model to load in the server process
SMOLLM_HIDDEN = 576


class ChatReadoutTest(BrowserTestCase):
    server_settings = {"STEERLAB_DEFAULT_NEW_TOKENS": 12, "Q_CLUSTER": {**settings.Q_CLUSTER, "sync": True}}

    def setUp(self):
        for name in self.dimensions:
            vector_sets.dimension_import_default(name=name)
        g = torch.Generator().manual_seed(3)
        ends = {dim: ReadoutEnds(12, torch.randn(SMOLLM_HIDDEN, generator=g), torch.randn(SMOLLM_HIDDEN, generator=g))
                for dim in self.dimensions}
        vectors = make_vectors(list(self.dimensions)).with_readout(ends)
        self.vector_set = vector_sets.vector_set_register(vectors=vectors, name="shared")

    def test_gauges_appear_under_a_streamed_answer_and_open_per_token(self):
        alice = self.user("alice")
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=1280, height=800)
            page.goto(f"{self.live_server_url}/chat/")
            page.wait_for_selector("#chat-form[data-connected=true]")
            page.fill("#chat-prompt", "Where should I eat tonight?")
            page.click("#chat-send")
            answer = page.locator(".chat-assistant").last
            answer.locator(".chat-readout").wait_for(timeout=MODEL_TIMEOUT_MS)
            assert page.locator(".chat-assistant .chat-text.streaming").count() == 0  # after the stream, not during
            rows = answer.locator(".readout-row")
            assert rows.count() == 2
            assert [rows.nth(i).get_attribute("data-dimension") for i in range(2)] == ["formality", "cost"]
            label = rows.first.locator(".readout-track").get_attribute("aria-label")
            assert label.startswith("Casual to Formal: reads "), label
            mark, track = box(page, ".chat-assistant .readout-mark"), box(page, ".chat-assistant .readout-track")
            assert track["x"] - mark["width"] <= mark["x"] <= track["x"] + track["width"]  # on its track
            # At either end the mark stays off its labels (a reading of −1.04 sat on "Touristy").
            low_label = box(page, ".chat-assistant .readout-low")
            assert track["x"] - mark["width"] / 2 >= low_label["x"] + low_label["width"]

            toggle = answer.locator(".readout-toggle")
            assert toggle.get_attribute("aria-expanded") == "false" and not answer.locator(".readout-tokens").is_visible()
            toggle.click()
            assert toggle.get_attribute("aria-expanded") == "true"
            # Per dimension: each token (faint) and their running mean, on a scale that holds them.
            assert answer.locator(".readout-tokens svg polyline.readout-line").count() == 2
            assert answer.locator(".readout-tokens svg polyline.readout-line-token").count() == 2
            heights = page.eval_on_selector_all(
                ".chat-assistant .readout-tokens polyline",
                "lines => lines.flatMap(l => l.getAttribute('points').split(' ').map(p => +p.split(',')[1]))")
            assert heights and all(0 <= h <= 36 for h in heights)

            # Reopened, the conversation shows the stored readout; the profile lists it.
            page.reload()
            page.locator(".chat-assistant .chat-readout .readout-row").first.wait_for()
            assert page.locator(".chat-assistant .readout-row").count() == 2
            page.goto(f"{self.live_server_url}/profile/")
            cell = page.locator("#interaction-log .interaction-readout").first.text_content()
            assert cell.startswith("formality ") and " · cost " in cell, cell
            assert page.locator("#interaction-log .interaction-steering").first.text_content()
            assert not problems, problems
