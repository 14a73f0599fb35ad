"""The screenshots in docs/images/, taken from a running site (`make run`) with Debian's chromium
driven by Playwright: two sliders set (STEERING) and one answer streamed for the demo account,
then the chat page at a desktop width and on a phone (the phone's conversation drawer open too),
the answer's readout, and a vector set's plots in the admin.

    python bench/screenshots.py                       # http://127.0.0.1:8000, the demo account
    python bench/screenshots.py --url URL --username U --password P --out docs/images \
        --staff-username S --staff-password P2 [--vector-set ID]

Writes chat.png (1280 × 800), chat-phone.png and chat-phone-drawer.png (390 × 844); readout.png,
the answer with its readout gauges and per-token view open, when the page shows a readout (skipped, saying so, where it
does not); and, with a staff account, vector-set-plots.png and vector-set-layers.png: one
dimension's plot (an evaluated one where there is one) and the layer scores, from the admin page
of the set the demo account chats with (or --vector-set). The answer is the model's, so each
run's text differs; the layout is what the pictures are for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
PROMPT = "Suggest a place for dinner with friends, and say why in a short list."
STEERING = {"formality": 80, "cost": -60}  # slider positions set for the account before it asks
ANSWER_TIMEOUT_MS = 300_000  # the site's first answer waits for its model to load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="steerlab-demo")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    parser.add_argument("--staff-username", help="a staff account, for the vector set's plots (skipped without)")
    parser.add_argument("--staff-password")
    parser.add_argument("--vector-set", type=int, help="whose plots (default: the set the demo account chats with)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = []

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            log_in(page, args.url, args.username, args.password)
            page.goto(args.url + "/chat/")
            page.wait_for_selector("#chat-form[data-connected=true]")
            for name, percent in STEERING.items():  # a steered answer, its label under it
                slider = page.locator(f"#pref-{name}")
                if slider.count():
                    slider.fill(str(percent))
                    page.wait_for_function(f"() => document.getElementById('summary-{name}').textContent !== 'Neutral'")
            page.fill("#chat-prompt", PROMPT)
            page.click("#chat-send")
            page.wait_for_selector(".chat-assistant .chat-text.streaming", state="detached", timeout=ANSWER_TIMEOUT_MS)
            page.wait_for_selector("#conversation-title[data-named]")
            conversation = page.url
            page.screenshot(path=str(args.out / "chat.png"))
            written.append("chat.png")
            # The readout under the answer, its per-token view open (a set computed before the
            # readout has none: recompute it, and this picture is taken).
            answer = page.locator(".chat-assistant").last
            if answer.locator(".readout-toggle").count():
                answer.locator(".readout-toggle").click()
                answer.locator(".chat-readout").screenshot(path=str(args.out / "readout.png"))
                written.append("readout.png")
            else:
                print("readout.png skipped: this site's chat page shows no readout under its answers")
            chosen = args.vector_set or page.evaluate("() => fetch('/api/profile/').then(r => r.json())")["vector_set"]

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
            written += ["chat-phone.png", "chat-phone-drawer.png"]

            if args.staff_username:
                staff = browser.new_context(viewport={"width": 1280, "height": 900})
                page = staff.new_page()
                log_in(page, args.url, args.staff_username, args.staff_password)
                page.goto(f"{args.url}/admin/steering/vectorset/{chosen}/change/")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.field-plots img')].every(i => i.complete && i.naturalWidth > 0)"
                )
                # One dimension (an evaluated one, whose Effect is drawn, where there is one) and the layers.
                figures = page.locator(".field-plots figure[data-dimension]")
                evaluated = page.locator(".field-plots figure[data-dimension]:has(figcaption a)")
                (evaluated if evaluated.count() else figures).first.screenshot(path=str(args.out / "vector-set-plots.png"))
                written.append("vector-set-plots.png")
                layers = page.locator('.field-plots figure[data-plot="layers"]')
                if layers.count():
                    layers.screenshot(path=str(args.out / "vector-set-layers.png"))
                    written.append("vector-set-layers.png")
            else:
                print("vector-set-plots.png skipped: give --staff-username and --staff-password")
        finally:
            browser.close()
    for name in written:
        print(args.out / name)


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector(".nav-user")


if __name__ == "__main__":
    main()
