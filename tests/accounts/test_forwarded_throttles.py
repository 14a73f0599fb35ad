"""The log-in, token and sign-up throttles against a live daphne started with compose.yaml's own
command line: a client that talks to daphne directly cannot buy a fresh budget with a new
X-Forwarded-For, and behind a trusted proxy each client is counted as itself, never as what it
wrote into the header (ops/forwarded.py). The proxy is played by connections from 127.0.0.2,
the server's STEERLAB_TRUSTED_PROXIES; connections from 127.0.0.1 are untrusted clients."""

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import pytest
import yaml
from django.db import connection

from bench.server import free_port
from tests.conftest import PASSWORD
from tests.site.test_settings import REPO

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIMIT = 3
CLIENT, PROXY = "127.0.0.1", "127.0.0.2"


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def compose_daphne(port: int) -> list[str]:
    """The web service's command from compose.yaml, listening on 127.0.0.1:`port`."""
    command = list(yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["web"]["command"])
    assert command[0] == "daphne"
    command[command.index("-b") + 1], command[command.index("-p") + 1] = "127.0.0.1", str(port)
    return [sys.executable, "-m", *command]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        url = database_url()
    port = free_port()
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "live-forwarded-test-key-" + "x" * 30, "ALLOWED_HOSTS": "127.0.0.1",
           "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "STEERLAB_TRUSTED_PROXIES": PROXY,
           # The per-address budgets are under test: a guesser rotating account names.
           "THROTTLE_LOGIN_ADDRESS": f"{LIMIT}/hour", "THROTTLE_SIGNUP": f"{LIMIT}/hour"}
    process = subprocess.Popen(compose_daphne(port), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while True:
        try:
            if request(port, "GET", "/accounts/login/")[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("daphne did not start: " + process.stderr.read().decode()[-2000:])
        time.sleep(0.5)
    yield port
    process.terminate()
    process.wait(30)


def request(port, method, path, *, body=None, headers=None, source=CLIENT):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post(port, path, fields, *, forwarded_for=None, source=CLIENT):
    """POST a form as a browser would: the page's CSRF cookie first, then the form with it."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    if path.startswith("/api/"):
        return request(port, "POST", path, body=json.dumps(fields),
                       headers={**headers, "Content-Type": "application/json"}, source=source)[0]
    _, page_headers, _ = request(port, "GET", path, headers=headers, source=source)
    token = re.search(r"csrftoken=(\w+)", page_headers.get("Set-Cookie", "")).group(1)
    body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token})
    return request(port, "POST", path, body=body, source=source, headers={
        **headers, "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={token}",
        "Referer": f"http://127.0.0.1:{port}{path}"})[0]


def log_in(port, path, username, password, **kwargs):
    return post(port, path, {"username": username, "password": password}, **kwargs)


def sign_up(port, username, **kwargs):
    password = "a-long-unusual-passphrase-42"
    return post(port, "/accounts/signup/", {"username": username, "email": "", "password1": password,
                                            "password2": password}, **kwargs)


def test_a_new_forwarded_for_from_an_untrusted_client_buys_no_new_budget(server, alice):
    # Connections from 127.0.0.1 only in this test: that address's budget is spent here.
    for n in range(LIMIT):
        assert log_in(server, "/accounts/login/", f"guess{n}", "wrong") == 200
    for path in ("/accounts/login/", "/api/auth/token/"):
        assert log_in(server, path, "alice", PASSWORD) == 429
        for n in range(3):
            assert log_in(server, path, "alice", PASSWORD, forwarded_for=f"198.51.100.{n + 1}") == 429


@pytest.mark.parametrize(("path", "client"), [("/accounts/login/", "203.0.113.1"), ("/api/auth/token/", "203.0.113.2")])
def test_behind_a_trusted_proxy_each_client_is_counted_as_itself(server, alice, path, client):
    for n in range(LIMIT):
        assert log_in(server, path, f"guess{n}", "wrong", source=PROXY, forwarded_for=client) in (200, 400)
    assert log_in(server, path, "alice", PASSWORD, source=PROXY, forwarded_for=client) == 429
    # The client wrote an address of its own; the proxy appended the one it saw.
    assert log_in(server, path, "alice", PASSWORD, source=PROXY, forwarded_for=f"198.51.100.9, {client}") == 429
    # Another client behind the same proxy has its own budget.
    assert log_in(server, path, "alice", PASSWORD, source=PROXY, forwarded_for=f"{client}0") in (200, 302)


def test_sign_ups_follow_the_same_rule(server, django_user_model):
    for n in range(LIMIT):
        assert sign_up(server, f"spoofer{n}", forwarded_for=f"198.51.100.{n + 1}") == 302
    assert sign_up(server, "spoofer-more", forwarded_for="198.51.100.99") == 429
    for n in range(LIMIT):
        assert sign_up(server, f"proxied{n}", source=PROXY, forwarded_for="203.0.113.7") == 302
    assert sign_up(server, "proxied-more", source=PROXY, forwarded_for="198.51.100.5, 203.0.113.7") == 429
    assert sign_up(server, "proxied-other", source=PROXY, forwarded_for="203.0.113.8") == 302
    assert not django_user_model.objects.filter(username__endswith="-more").exists()
