"""The chat and profile pages as a user reads them, in a real browser (Debian's chromium driven
by Playwright against a live daphne server): markdown made safe, long words, the draft kept,
feedback remembered, one number for a strength, the mode switch, the welcome, the profile's
table on a phone. Answers here were logged through the real service beforehand; nothing
generates, so the model is never loaded (test_chat_stream.py streams real answers)."""

from __future__ import annotations

import pytest

from steering.models import Feedback, InteractionLog, PreferenceProfile
from steering.selectors import strength_percent
from steering.services import chat
from steering.services.feedback import feedback_create
from tests.browser import BROWSER_MARKS
from tests.browser.live import BrowserTestCase, box

pytestmark = BROWSER_MARKS

HOSTILE = (
    "**Verify the demand** first.\n\n"
    '<img src=x onerror="window.__pwned = 1">\n\n'
    "<script>window.__pwned = 2</script>\n\n"
    "[click me](javascript:window.__pwned=3) and [docs](https://example.org/docs)\n\n"
    '<a href="javascript:window.__pwned=4">raw link</a> <b onmouseover="window.__pwned=5">bold</b>\n\n'
    "![pixel](https://tracker.example/p.gif) <iframe src=\"javascript:window.__pwned=6\"></iframe>\n\n"
    "- one\n- two\n\n"
    + "Supercalifragilistic" * 12
)


def log_answer(user, conversation, *, prompt="Where should I eat?", response="Try the market.", status="ok",
               strengths=None, tokens=20, max_new_tokens=128):
    return chat.interaction_record(
        user=user, prompt=prompt, response=response, status=status, vector_set=conversation.vector_set,
        strengths=strengths or {}, params={"max_new_tokens": max_new_tokens}, tokens=tokens, latency_ms=100,
        source=InteractionLog.Source.WEBSOCKET, conversation=conversation,
    )


class ChatViewsTest(BrowserTestCase):
    def conversation(self, user, title="Dinner"):
        return chat.conversation_start(user=user, first_prompt=title, vector_set=self.vector_set)

    def test_it_renders_hostile_markdown_as_text_and_wraps_long_words(self):
        alice = self.user("alice")
        conversation = self.conversation(alice)
        log_answer(alice, conversation, response=HOSTILE)
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=1280)
            page.goto(f"{self.live_server_url}/chat/{conversation.pk}/")
            answer = page.locator(".chat-assistant .chat-text")
            # Markdown is rendered...
            assert answer.locator("strong").first.text_content() == "Verify the demand"
            assert answer.locator("li").count() == 2
            assert answer.locator('a[href="https://example.org/docs"]').get_attribute("rel") == "noopener noreferrer nofollow"
            # ... and nothing in it runs or loads: raw HTML is shown as text, links lose javascript:.
            page.wait_for_timeout(300)
            assert page.evaluate("window.__pwned") is None
            for tag in ("img", "script", "iframe", "b"):
                assert answer.locator(tag).count() == 0, tag
            assert page.evaluate(
                "() => [...document.querySelectorAll('.chat-text a')].every(a => !/^javascript:/i.test(a.getAttribute('href') || ''))"
            )
            assert page.evaluate("() => document.querySelectorAll('.chat-text [onerror], .chat-text [onmouseover]').length") == 0
            assert "<img src=x" in answer.text_content()
            # The 240-letter word wraps inside its bubble, which stays inside the list.
            bubble, messages = box(page, ".chat-assistant .chat-text"), box(page, "#chat-messages")
            assert bubble["x"] + bubble["width"] <= messages["x"] + messages["width"] + 1
            assert page.evaluate("() => { const l = document.getElementById('chat-messages'); return l.scrollWidth <= l.clientWidth; }")
            # What streams in goes through the same renderer (the chat's token frames call it).
            page.evaluate("""() => { const el = document.createElement('div');
                window.SteerLab.renderMarkdown(el, '<img src=x onerror="window.__pwned=7">[x](javascript:alert(1))');
                document.body.appendChild(el); }""")
            page.wait_for_timeout(300)
            assert page.evaluate("window.__pwned") is None
        assert problems == []

    def test_it_keeps_the_draft_of_a_prompt_over_the_limit_and_leaves_no_empty_bubble(self):
        alice = self.user("alice")
        with self.browser() as (new_page, problems):
            page = new_page(alice)
            page.goto(self.live_server_url + "/chat/")
            page.wait_for_selector("#chat-form[data-connected=true]")
            limit = int(page.get_attribute("#chat-prompt", "data-max-chars"))
            draft = "word " * (limit // 5 + 10)
            page.fill("#chat-prompt", draft)
            page.click("#chat-send")
            assert "the limit is" in page.locator("#chat-status").text_content()
            assert page.input_value("#chat-prompt") == draft
            assert page.locator(".chat-message").count() == 0
            # The server refuses it too (a page without the limit, an old tab): same outcome.
            page.evaluate("document.getElementById('chat-prompt').dataset.maxChars = ''")
            page.click("#chat-send")
            page.wait_for_function("() => /Not sent/.test(document.getElementById('chat-status').textContent)")
            assert "prompt" in page.locator("#chat-status").text_content()
            assert page.input_value("#chat-prompt") == draft
            assert page.locator(".chat-message").count() == 0
            assert page.is_enabled("#chat-send")
        assert problems == []

    def test_it_shows_a_reopened_answer_s_feedback_and_refuses_a_second_rating(self):
        alice = self.user("alice")
        conversation = self.conversation(alice)
        rated = log_answer(alice, conversation)
        log_answer(alice, conversation, prompt="And lunch?", response="The corner café.")
        feedback = feedback_create(user=alice, interaction=rated, thumbs=-1, text="too expensive")
        Feedback.objects.filter(pk=feedback.pk).update(
            learn_status=Feedback.Learn.APPLIED, learn_note="Learned: cost Neutral → 35 % Budget"
        )
        PreferenceProfile.objects.create(user=alice, vector_set=self.vector_set, mode="learn")
        with self.browser() as (new_page, problems):
            page = new_page(alice)
            page.goto(f"{self.live_server_url}/chat/{conversation.pk}/")
            first, second = page.locator(".chat-assistant").nth(0), page.locator(".chat-assistant").nth(1)
            first.locator(".feedback-outcome").wait_for()
            assert first.locator(".feedback-outcome").text_content() == "Learned: cost Neutral → 35 % Budget"
            assert first.locator(".feedback-down").get_attribute("aria-pressed") == "true"
            assert first.locator(".feedback-up").get_attribute("aria-pressed") == "false"
            assert first.locator(".feedback-down").is_disabled() and first.locator(".feedback-up").is_disabled()
            # The unrated answer can still be rated.
            assert second.locator(".feedback-up").is_enabled()
            # The server refuses a second rating whatever the page does.
            status = page.evaluate(
                f"""async () => (await fetch('/api/interactions/{rated.pk}/feedback/', {{method: 'POST',
                    credentials: 'same-origin', headers: {{'Content-Type': 'application/json',
                    'X-CSRFToken': window.SteerLab.csrfToken()}}, body: JSON.stringify({{thumbs: 1}})}})).status"""
            )
            assert status == 409
        assert Feedback.objects.filter(interaction=rated).count() == 1
        assert [p for p in problems if "409 (Conflict)" not in p] == []

    def test_it_rounds_a_strength_to_one_number_on_every_page(self):
        alice = self.user("alice")
        values = [0.025, -0.025, 0.005, 0.015, 0.02499, 0.355, -0.675, 0.125, 1.0, -0.0049]
        with self.browser() as (new_page, problems):
            page = new_page(alice)
            page.goto(self.live_server_url + "/chat/")
            in_browser = page.evaluate(f"() => {values}.map(v => window.SteerLab.strengthPercent(v))")
        assert in_browser == [strength_percent(v) for v in values]
        assert strength_percent(0.025) == 3 and strength_percent(0.02499) == 2
        assert problems == []

    def test_the_mode_switch_shows_each_mode_s_controls_and_its_legend_stays_on_one_line(self):
        alice = self.user("alice")
        conversation = self.conversation(alice)
        log_answer(alice, conversation)
        with self.browser() as (new_page, problems):
            page = new_page(alice)
            page.goto(f"{self.live_server_url}/chat/{conversation.pk}/")
            feedback = page.locator(".chat-assistant .chat-feedback")
            assert page.locator("#pref-mode").get_attribute("data-mode") == "select"
            assert page.locator("#calibrate").is_hidden() and feedback.is_hidden()
            page.check('input[name="pref-mode"][value="calibrate"]')
            page.wait_for_selector("#calibrate", state="visible")
            assert feedback.is_hidden()
            page.check('input[name="pref-mode"][value="learn"]')
            feedback.wait_for(state="visible")
            assert page.locator("#calibrate").is_hidden()
            # Saved: a reload keeps the mode and what it shows.
            page.reload()
            feedback.wait_for(state="visible")
            legend, fieldset = box(page, ".pref-modes legend"), box(page, ".pref-modes")
            line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.pref-modes legend')).lineHeight)")
            assert legend["height"] <= line * 1.2, (legend, line)
            assert legend["x"] + legend["width"] <= fieldset["x"] + fieldset["width"]
        assert PreferenceProfile.objects.get(user=alice).mode == "learn"
        assert problems == []

    def test_the_chat_fills_the_window(self):
        alice = self.user("alice")
        with self.browser() as (new_page, problems):
            for width, height in ((1280, 800), (1366, 768), (390, 844)):
                page = new_page(alice, width=width, height=height)
                page.goto(self.live_server_url + "/chat/")
                messages, form = box(page, "#chat-messages"), box(page, "#chat-form")
                assert messages["height"] >= 0.55 * height, (width, messages)
                assert form["y"] + form["height"] <= height, (width, form)
                page.close()
        assert problems == []

    def test_a_new_user_is_welcomed_with_the_way_to_the_chat(self):
        with self.browser() as (new_page, problems):
            page = new_page()
            page.goto(self.live_server_url + "/accounts/signup/")
            page.fill("#id_username", "dora")
            page.fill("#id_email", "dora@example.org")
            page.fill("#id_password1", "a long enough passphrase 42")
            page.fill("#id_password2", "a long enough passphrase 42")
            page.click("button[type=submit]")
            page.wait_for_selector("#welcome")
            assert page.locator("#welcome").text_content().startswith("Welcome to SteerLab, dora.")
            page.click("#welcome-chat")
            page.wait_for_url(self.live_server_url + "/chat/")
            # Once: the next visit is a return.
            page.goto(self.live_server_url + "/")
            assert page.locator("#welcome").text_content().strip() == "Welcome back, dora."
        assert problems == []

    def test_the_profile_shows_summaries_and_a_steering_column_that_fit_a_phone(self):
        alice = self.user("alice")
        conversation = self.conversation(alice)
        log_answer(alice, conversation, strengths={"cost": -0.355, "formality": 0.8}, status="cancelled")
        from steering.services.profiles import profile_get_or_create, profile_update

        profile = profile_get_or_create(user=alice, vector_set=self.vector_set)
        profile_update(profile=profile, strengths={"cost": -0.38}, source="select")
        profile_update(profile=profile, strengths={"cost": 0.025}, source="select")
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=390, height=844)
            page.goto(self.live_server_url + "/profile/")
            changes = page.locator("#profile-history .history-change").all_text_contents()
            assert changes == ["38 % Budget → 3 % Luxury", "Neutral → 38 % Budget"]
            assert page.locator("#interaction-log .interaction-steering").text_content() == "36 % Budget · 80 % Formal"
            status = box(page, "#interaction-log .interaction-status")
            assert status["x"] >= 0 and status["x"] + status["width"] <= 390
            assert page.locator("#interaction-log .interaction-status").is_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert problems == []


@pytest.mark.parametrize("value,percent", [(0.025, 3), (-0.025, 3), (0.005, 1), (0.0049, 0), (-1.0, 100)])
def test_strength_percent_rounds_half_away_from_zero(value, percent):
    assert strength_percent(value) == percent


class ConversationsTest(BrowserTestCase):
    def test_the_list_shows_titles_and_times_searches_renames_and_deletes_only_your_own(self):
        alice, bob = self.user("alice"), self.user("bob")
        market = chat.conversation_start(user=alice, first_prompt="Where should I eat tonight?", vector_set=self.vector_set)
        log_answer(alice, market, response="The night market has cheap dumplings.")
        trattoria = chat.conversation_start(user=alice, first_prompt="Where should I eat tonight?", vector_set=self.vector_set)
        log_answer(alice, trattoria, response="**A quiet trattoria** with handmade pasta.")
        bobs = chat.conversation_start(user=bob, first_prompt="Dumplings near me?", vector_set=self.vector_set)
        log_answer(bob, bobs, response="Bob's dumpling place.")
        with self.browser() as (new_page, problems):
            page = new_page(alice)
            page.goto(f"{self.live_server_url}/chat/{market.pk}/")
            links = page.locator("#conversation-list .conversation-link")
            assert links.all_text_contents() == ["A quiet trattoria", "The night market has cheap dumplings"]
            assert page.locator("#conversation-list .conversation-time").count() == 2
            assert page.locator("#conversation-title").text_content() == "The night market has cheap dumplings"
            # Search: by what was said; bob's conversation never shows.
            page.fill("#conversation-search", "dumpling")
            page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation-link').length === 1")
            assert links.all_text_contents() == ["The night market has cheap dumplings"]
            page.fill("#conversation-search", "zebra")
            page.wait_for_selector("#conversation-list .conversation-empty")
            page.fill("#conversation-search", "")
            page.wait_for_function("() => document.querySelectorAll('#conversation-list .conversation-link').length === 2")
            # Rename.
            page.click("#conversation-rename")
            page.fill("#conversation-rename-input", "Cheap eats")
            page.click("#conversation-rename-form button[type=submit]")
            page.wait_for_function("() => document.getElementById('conversation-title').textContent === 'Cheap eats'")
            assert page.locator(f'#conversation-list [data-conversation="{market.pk}"] .conversation-link').text_content() == "Cheap eats"
            # Delete, saying what it erases.
            page.click("#conversation-delete")
            assert "erased from your interaction log" in page.locator("#conversation-delete-confirm").text_content()
            page.click("#conversation-delete-yes")
            page.wait_for_url(self.live_server_url + "/chat/")
            assert links.all_text_contents() == ["A quiet trattoria"]
        assert not type(market).objects.filter(pk=market.pk).exists()
        assert InteractionLog.objects.get(user=alice, conversation=None).response == ""
        assert type(market).objects.get(pk=bobs.pk).title == "Bob's dumpling place"
        assert problems == []

    def test_on_a_phone_the_list_is_a_drawer(self):
        alice = self.user("alice")
        conversation = chat.conversation_start(user=alice, first_prompt="Plan a trip", vector_set=self.vector_set)
        log_answer(alice, conversation, response="# Three days in Rome")
        with self.browser() as (new_page, problems):
            page = new_page(alice, width=390, height=844)
            page.goto(f"{self.live_server_url}/chat/{conversation.pk}/")
            # Closed: out of sight, and the chat comes first, above the preferences.
            assert page.locator("#chat-sidebar").is_hidden() or box(page, "#chat-sidebar")["x"] + box(page, "#chat-sidebar")["width"] <= 0
            assert box(page, ".chat-main")["y"] < box(page, "#pref-panel")["y"]
            toggle = box(page, "#conversations-toggle")
            assert toggle["y"] + toggle["height"] <= 844
            page.click("#conversations-toggle")
            page.wait_for_function("() => document.getElementById('chat-sidebar').getBoundingClientRect().x >= 0")
            drawer = box(page, "#chat-sidebar")
            assert drawer["x"] == 0 and drawer["width"] <= 390 and drawer["height"] >= 800
            assert page.locator("#conversation-list .conversation-link").text_content() == "Three days in Rome"
            page.keyboard.press("Escape")
            page.wait_for_function("() => document.getElementById('chat-sidebar').getBoundingClientRect().right <= 0")
            # At a desktop width it is a column again, no toggle.
            page.set_viewport_size({"width": 1366, "height": 768})
            assert page.locator("#conversations-toggle").is_hidden()
            sidebar, main = box(page, "#chat-sidebar"), box(page, ".chat-main")
            assert sidebar["x"] + sidebar["width"] <= main["x"]
        assert problems == []
