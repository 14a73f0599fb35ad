"""daphne's websocket caps: every command line that starts daphne caps incoming messages and
frames at what the chat protocol needs, and requirements.txt asks for a daphne that has the caps."""

import re
from pathlib import Path

from steering.chat.native import MAX_FRAME_BYTES, MAX_FRAME_CHARS

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = ["Makefile", "Dockerfile", "compose.yaml", "compose.gpu.yaml", "bench/server.py"]


def _daphne_lines():
    for name in LAUNCHERS:
        path = ROOT / name
        if not path.exists():
            continue
        # A command may span lines (an argument list); it runs from "daphne" to the application.
        for command in re.findall(r"\bdaphne\b[^\n]*?(?:\n[^\n]*?){0,3}steerlab_site\.asgi:application", path.read_text()):
            yield name, command


def test_the_cap_fits_the_largest_frame_the_consumer_reads():
    # A frame of MAX_FRAME_CHARS characters is up to four bytes each in UTF-8.
    assert MAX_FRAME_BYTES == 4 * MAX_FRAME_CHARS < 1024 * 1024


def test_it_starts_daphne_with_the_caps_everywhere():
    lines = list(_daphne_lines())
    assert {name for name, _ in lines} >= {"Makefile", "Dockerfile", "compose.yaml", "bench/server.py"}
    for name, line in lines:
        flat = re.sub(r'[",\[\]]', " ", line)
        for flag in ("--websocket-max-message-size", "--websocket-max-frame-size"):
            assert re.search(rf"{flag}\s+{MAX_FRAME_BYTES}\b", flat), (name, flag, line)


def test_it_requires_a_daphne_that_caps_websocket_messages():
    (line,) = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.startswith("daphne")]
    assert re.fullmatch(r"daphne>=4\.2\.2,<5", line.split("#")[0].strip()), line
