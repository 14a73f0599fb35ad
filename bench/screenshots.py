"""The chat page's screenshots for docs/images/, taken from a running site (`make run`) with
Debian's chromium driven by Playwright: one answer streamed for the demo account, then the page
at a desktop width and on a phone, the phone's conversation drawer open.

    python bench/screenshots.py                       # http://127.0.0.1:8000, the demo account
    python bench/screenshots.py --url URL --username U --password P --out docs/images

Writes chat.png (1280 × 800), readout.png (the answer's readout, per token open), chat-phone.png
and chat-phone-drawer.png (390 × 844). The answer is
the model's, so each run's text differs; the layout is what the pictures are for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
PROMPT = "Suggest a place for dinner with friends, and say why in a short list."
ANSWER_TIMEOUT_MS = 300_000  # the site's first answer waits for its model to load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="steerlab-demo")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    shots = ["chat.png", "chat-phone.png", "chat-phone-drawer.png"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(args.url + "/accounts/login/")
            page.fill("#id_username", args.username)
            page.fill("#id_password", args.password)
            page.click("button[type=submit]")
            page.wait_for_selector(".nav-user")
            page.goto(args.url + "/chat/")
            page.wait_for_selector("#chat-form[data-connected=true]")
            page.fill("#chat-prompt", PROMPT)
            page.click("#chat-send")
            page.wait_for_selector(".chat-assistant .chat-text.streaming", state="detached", timeout=ANSWER_TIMEOUT_MS)
            page.wait_for_selector("#conversation-title[data-named]")
            conversation = page.url
            page.screenshot(path=str(args.out / "chat.png"))
            # The readout under the answer, its per-token view open (a set computed before the
            # readout has none: recompute it, and this picture is taken).
            answer = page.locator(".chat-assistant").last
            if answer.locator(".readout-toggle").count():
                answer.locator(".readout-toggle").click()
                answer.locator(".chat-readout").screenshot(path=str(args.out / "readout.png"))
                shots.append("readout.png")

            phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                        storage_state=context.storage_state())
            page = phone.new_page()
            page.goto(conversation)
            page.wait_for_selector("#chat-form[data-connected=true]")
            page.screenshot(path=str(args.out / "chat-phone.png"))
            page.click("#conversations-toggle")
            page.wait_for_function("() => document.getElementById('chat-sidebar').getBoundingClientRect().x >= 0")
            page.wait_for_timeout(300)  # the drawer's slide
            page.screenshot(path=str(args.out / "chat-phone-drawer.png"))
        finally:
            browser.close()
    for name in shots:
        print(args.out / name)


if __name__ == "__main__":
    main()
