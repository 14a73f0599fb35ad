"""Real answers streamed into the chat page (Debian's chromium, a live daphne server, the embedded
model): the list follows the stream unless the user scrolled up, an answer cut by the token
limit says so and continues, and a reload mid-answer leaves it stopped, not finished."""

from __future__ import annotations

import time

from django.conf import settings

from steering.models import InteractionLog
from steering.services import chat
from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase, box

pytestmark = BROWSER_MARKS

MODEL_TIMEOUT_MS = 420_000  # the first answer waits for the model to load in the server process (slow on a busy machine)
NEW_TOKENS = 48  # short enough to be cut by the limit, long enough to reload in the middle
STREAMING = (
    "() => { const el = document.querySelector('.chat-assistant .chat-text.streaming');"
    " return el && el.textContent.length > 0; }"
)
AT_BOTTOM = "() => { const l = document.getElementById('chat-messages'); return l.scrollHeight - l.scrollTop - l.clientHeight <= 48; }"


class ChatStreamTest(BrowserTestCase):
    # The server answers with NEW_TOKENS by default; LEARN's task runs inline (no qcluster here).
    server_settings = {"STEERLAB_DEFAULT_NEW_TOKENS": NEW_TOKENS, "Q_CLUSTER": {**settings.Q_CLUSTER, "sync": True}}

    def test_the_list_follows_the_stream_a_cut_answer_continues_and_a_reload_stops_it(self):
        alice = self.user("alice")
        conversation = chat.conversation_start(user=alice, first_prompt="Earlier", vector_set=self.vector_set)
        for n in range(4):  # a conversation longer than the window (short: it is the model's context too)
            chat.interaction_record(
                user=alice, prompt=f"Question {n}", response=f"Answer {n}.\n\n" * 6, status="ok",
                vector_set=self.vector_set, strengths={}, params={"max_new_tokens": 128}, tokens=90,
                latency_ms=5, conversation=conversation,
            )
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=1280, height=560)
            page.goto(f"{self.live_server_url}/chat/{conversation.pk}/")
            page.wait_for_selector("#chat-form[data-connected=true]")
            assert page.evaluate(AT_BOTTOM), "a conversation opens at its latest turn"

            # 1. A long answer: the list follows it to its end, and the limit cuts it visibly.
            page.fill("#chat-prompt", "Write a very long and detailed story about a dragon who learns to cook.")
            page.click("#chat-send")
            page.wait_for_function(STREAMING, timeout=MODEL_TIMEOUT_MS)
            page.wait_for_selector(".chat-assistant .chat-text.streaming", state="detached", timeout=MODEL_TIMEOUT_MS)
            assert page.evaluate(AT_BOTTOM)
            last = page.locator(".chat-assistant").last
            answer, messages = box(page, ".chat-assistant >> nth=-1"), box(page, "#chat-messages")
            assert answer["y"] + answer["height"] <= messages["y"] + messages["height"] + 1
            assert "chat-cut" in last.get_attribute("class")
            assert last.locator(".chat-cutoff").text_content().startswith("Cut off at the answer length limit.")
            assert last.locator(".chat-feedback").count() == 1  # a cut answer is finished: it can be rated

            # 2. Continue: a new turn goes on; a user who scrolls up to read stays there.
            last.locator(".chat-continue").click()
            page.wait_for_function(STREAMING, timeout=MODEL_TIMEOUT_MS)
            assert page.locator(".chat-user").last.text_content() == "Continue."
            page.evaluate("document.getElementById('chat-messages').scrollTop = 0")
            page.wait_for_selector(".chat-assistant .chat-text.streaming", state="detached", timeout=MODEL_TIMEOUT_MS)
            assert page.evaluate("document.getElementById('chat-messages').scrollTop") < 10
            assert page.locator(".chat-continue").count() == 1  # only the latest answer offers it

            # 3. A reload mid-answer: the partial answer is saved as stopped, with no feedback.
            page.fill("#chat-prompt", "Tell me a long story about the sea.")
            page.click("#chat-send")
            page.wait_for_function(STREAMING, timeout=MODEL_TIMEOUT_MS)
            page.reload()
            deadline = time.monotonic() + 20
            while page.locator(".chat-assistant").count() < 9 and time.monotonic() < deadline:
                page.wait_for_timeout(500)
                page.reload()
            stopped = page.locator(".chat-assistant").last
            assert "chat-stopped" in stopped.get_attribute("class")
            assert stopped.locator(".chat-steering").text_content().endswith("· stopped")
            assert stopped.locator(".chat-feedback").count() == 0
            assert stopped.get_attribute("data-interaction") is None
            # Stored answers cut by the limit still say so after a reload.
            assert page.locator(".chat-assistant.chat-cut").count() >= 1
        sea = InteractionLog.objects.get(prompt="Tell me a long story about the sea.")
        assert sea.status == InteractionLog.Status.CANCELLED and 0 < sea.tokens < NEW_TOKENS
        assert problems == []
