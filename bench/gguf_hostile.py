"""Hostile GGUF files cost the server nothing: start a throwaway server (bench/server.py), send
each crafted file of issue 23, item 1 to `POST /api/vector-sets/import-gguf/` as a signed-up
user, and print the status, the time to the answer, the server's CPU seconds and its peak RSS
growth for each.

    .venv/bin/python bench/gguf_hostile.py

The files (tests/gguf_hostile.py): a 49-byte array of 2^63 uint8, 2000 tensors of 1M floats
aliased at offset 0 (4 MB), 1M empty strings (8 MB), 1M uint8 (1 MB). The `gguf` package's
reader took minutes and gigabytes on them. The issue's bar: each a 4xx, ≤ 2 s of server CPU,
RSS growth ≤ 50 MiB. A first refused request loads the site model (as any first import or chat
does) and is not counted.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.body_limit import PeakRss  # noqa: E402
from bench.server import BenchServer  # noqa: E402
from tests.gguf_hostile import HOSTILE  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its waited-for children (the reader's child process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def post(server: BenchServer, token: str, content: bytes) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
             for name, value in (("name", "hostile"), ("dimension", "mood"))]
    parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.gguf"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{server.http_url}/api/vector-sets/import-gguf/", data=body, method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]


def main() -> int:
    failed = False
    with BenchServer(users=1, env={"THROTTLE_COMPUTE": "1000/hour"}) as server:
        token = server.tokens[0]
        started = time.monotonic()
        status, _ = post(server, token, HOSTILE["array-bomb"]())
        print(f"warm-up (loads the model): {status} in {time.monotonic() - started:.1f} s")
        for name, make in HOSTILE.items():
            content = make()
            before_rss, before_cpu = server.rss_mib(), cpu_seconds(server.pid)
            peak = PeakRss(server.pid)
            peak.start()
            started = time.monotonic()
            status, answer = post(server, token, content)
            seconds = time.monotonic() - started
            time.sleep(0.3)
            growth, cpu = peak.stop() - before_rss, cpu_seconds(server.pid) - before_cpu
            print(f"{name} ({len(content)} bytes): {status} in {seconds:.2f} s, server CPU {cpu:.2f} s, "
                  f"RSS {before_rss:.0f} MiB, growth {growth:.1f} MiB: {answer}")
            failed |= not 400 <= status < 500 or cpu > 2 or growth > 50
    print("PASS: each a 4xx, ≤ 2 s of server CPU, ≤ 50 MiB of RSS growth" if not failed else "FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
