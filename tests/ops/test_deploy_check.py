"""`manage.py check --deploy` with production settings, in a fresh interpreter fed only the
environment a deployment would set."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "SECRET_KEY": "k3y-for-the-deploy-check-only-7Qx9vLr2Wp4Zt8Nc5Hm1Jd6Fb3Gs0Ya",
    "ALLOWED_HOSTS": "steerlab.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://steerlab.example.org",
    "HTTPS": "1",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_HSTS_PRELOAD": "1",
}


def check_deploy(**env):
    return subprocess.run(
        # --fail-level WARNING: a warning fails the command, not only an error.
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_with_production_settings():
    result = check_deploy(**PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_it_fails_on_plain_http_settings():
    env = {k: v for k, v in PRODUCTION.items() if k != "HTTPS"}

    result = check_deploy(**env)

    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_it_fails_with_debug_on():
    result = check_deploy(**PRODUCTION, DEBUG="1")

    assert result.returncode != 0
    assert "security.W018" in result.stderr
