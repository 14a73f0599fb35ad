"""Oversized request bodies cost the server nothing: start daphne as `make run` does, send a
1 GiB body to /accounts/login/ (anonymous, streamed), and print the status the server answered,
how much of the body it took before answering, and how much its resident memory grew.

    .venv/bin/python bench/body_limit.py [--mib 1024]

Two requests: one that declares its length (Content-Length: 1 GiB), refused on the header,
and one in chunked transfer encoding (no length), refused by counting the bytes as they come.
The issue's bar: status 413 and RSS growth ≤ 50 MiB for each.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import PYTHON, free_port  # noqa: E402

CHUNK = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss(threading.Thread):
    """The largest RSS seen, sampled every 10 ms (VmHWM would include start-up's peak)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, rss_mib(pid), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)

    def stop(self) -> float:
        self.running = False
        self.join()
        return max(self.peak, rss_mib(self.pid))


def send(port: int, total: int, *, chunked: bool, host: str = "127.0.0.1", path: str = "/accounts/login/",
         headers: str = "Content-Type: application/x-www-form-urlencoded\r\n") -> tuple[str, int, float]:
    """POST `total` bytes to `path`; stop as soon as the server answers. Returns the status
    line, the bytes sent and the seconds taken. `headers`: more header lines, each ending CRLF."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"{headers}{framing}\r\nConnection: close\r\n\r\n")
    block = b"a" * CHUNK
    piece = (f"{CHUNK:x}\r\n".encode() + block + b"\r\n") if chunked else block
    sent, started, answer = 0, time.monotonic(), b""
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head.encode())
        try:
            while sent < total:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(piece)
                sent += CHUNK
            if chunked and sent >= total:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: its answer is still to be read
        sock.settimeout(120)
        try:
            while b"\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, socket.timeout):
            pass
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(no answer)"
    return status, sent, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="body size in MiB (default 1024 = 1 GiB)")
    args = parser.parse_args()
    total = args.mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="steerlab-body-") as tmp:
        env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
               "MEDIA_ROOT": f"{tmp}/media", "LOG_LEVEL": "WARNING"}
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        port = free_port()
        server = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "--websocket-max-message-size", "262144", "--websocket-max-frame-size", "262144",
             "steerlab_site.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).read()
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise RuntimeError("daphne did not start") from None
                    time.sleep(0.5)
            failed = False
            for chunked in (False, True):
                before = rss_mib(server.pid)
                peak = PeakRss(server.pid)
                peak.start()
                status, sent, seconds = send(port, total, chunked=chunked)
                time.sleep(0.5)  # whatever the server still does with the body after answering
                growth = peak.stop() - before
                how = "chunked, no length" if chunked else "Content-Length"
                print(f"{args.mib} MiB body ({how}) to /accounts/login/: {status!r}; "
                      f"sent {sent / CHUNK:.0f} MiB before the answer in {seconds:.2f} s; "
                      f"server RSS {before:.0f} → peak {before + growth:.0f} MiB (growth {growth:.1f} MiB)")
                failed |= " 413 " not in status + " " or growth > 50
            print("PASS: 413 and ≤ 50 MiB growth for both" if not failed else "FAIL")
            return 1 if failed else 0
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
