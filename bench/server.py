"""A throwaway SteerLab server for the benchmarks: its own SQLite database and media folder
in a temporary directory, migrated and bootstrapped, served by daphne on a free port, with
`n` users whose session cookies the websocket clients present.

    with BenchServer(users=16) as server:
        server.ws_url, server.http_url, server.cookies[i], server.pid
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

MAKE_USERS = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token
User = get_user_model()
out = []
for i in range({n}):
    user, _ = User.objects.get_or_create(username=f"bench{{i}}")
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    out.append({{"session": session.session_key, "token": Token.objects.get_or_create(user=user)[0].key}})
print("USERS=" + json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchServer:
    def __init__(self, *, users: int = 16, env: dict | None = None, log: bool = False) -> None:
        self.users = users
        self.tmp = tempfile.TemporaryDirectory(prefix="steerlab-bench-")
        self.port = free_port()
        self.env = {
            **os.environ,
            "DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{self.tmp.name}/bench.sqlite3",
            "MEDIA_ROOT": f"{self.tmp.name}/media",
            "LOG_LEVEL": "WARNING",
            "THROTTLE_CHAT": "100000/min",
            **(env or {}),
        }
        self.log = log
        self.process: subprocess.Popen | None = None
        self.cookies: list[str] = []
        self.tokens: list[str] = []

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def manage(self, *args: str) -> str:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def __enter__(self) -> BenchServer:
        print("bench: migrating and bootstrapping a fresh database …", file=sys.stderr)
        self.manage("migrate", "--noinput")
        self.manage("bootstrap")
        out = self.manage("shell", "-c", MAKE_USERS.format(n=self.users))
        users = json.loads(out.split("USERS=", 1)[1])
        self.cookies = [f"sessionid={u['session']}" for u in users]
        self.tokens = [u["token"] for u in users]
        print(f"bench: starting daphne on port {self.port} …", file=sys.stderr)
        self.process = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "--websocket-max-message-size", "262144", "--websocket-max-frame-size", "262144",
             "steerlab_site.asgi:application"],
            cwd=ROOT, env=self.env,
            stdout=None if self.log else subprocess.DEVNULL, stderr=None if self.log else subprocess.DEVNULL,
        )
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("daphne exited during start-up")
            try:
                with urllib.request.urlopen(f"{self.http_url}/api/health/", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError("the server did not become healthy in time")

    def rss_mib(self) -> float:
        """Resident memory of the daphne process (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.tmp.cleanup()
