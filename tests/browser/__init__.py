"""Real-browser tests: Debian's chromium driven by Playwright against a live daphne server."""

import importlib.util
import os

import pytest

CHROMIUM = "/usr/bin/chromium"

# Every browser test module's pytestmark: slow, and skipped (saying why) without the browser.
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is missing: pip install playwright"
    ),
]
