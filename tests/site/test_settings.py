"""Settings are read once per process, so each case imports them in a fresh interpreter with a
clean environment: nothing from the shell or from tests/settings.py leaks in."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOW_SETTINGS = """
import json
from steerlab_site import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SECRET_KEY": s.SECRET_KEY,
    "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "DATABASE": s.DATABASES["default"]["ENGINE"],
    "DATABASE_NAME": str(s.DATABASES["default"]["NAME"]),
    "CHANNEL_LAYER": s.CHANNEL_LAYERS["default"]["BACKEND"],
    "CACHE": s.CACHES["default"]["BACKEND"],
    "STEERLAB_MODEL": s.STEERLAB_MODEL,
    "STEERLAB_DEVICE": s.STEERLAB_DEVICE,
    "Q_CLUSTER": s.Q_CLUSTER,
}))
"""


def load_settings(**env):
    clean_env = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=REPO,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_with(**env):
    result = load_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_with(**env):
    result = load_settings(**env)
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1]


def test_it_requires_secret_key_when_debug_is_off():
    assert "SECRET_KEY is required" in error_with()
    assert "SECRET_KEY is required" in error_with(DEBUG="0")


def test_it_refuses_the_development_key_in_production():
    dev_key = settings_with(DEBUG="1")["SECRET_KEY"]
    assert "insecure" in dev_key
    assert "development key" in error_with(DEBUG="0", SECRET_KEY=dev_key)


def test_it_uses_the_given_secret_key():
    assert settings_with(SECRET_KEY="s3cret")["SECRET_KEY"] == "s3cret"


def test_it_fails_loudly_on_a_bad_debug_value():
    assert "DEBUG='maybe' is not valid" in error_with(DEBUG="maybe")


def test_it_defaults_to_production_with_no_hosts():
    s = settings_with(SECRET_KEY="s3cret")
    assert s["DEBUG"] is False
    assert s["ALLOWED_HOSTS"] == []


def test_it_allows_localhost_in_debug():
    assert "127.0.0.1" in settings_with(DEBUG="1")["ALLOWED_HOSTS"]


def test_it_defaults_to_sqlite_in_the_repo():
    s = settings_with(DEBUG="1")
    assert s["DATABASE"] == "django.db.backends.sqlite3"
    assert s["DATABASE_NAME"] == str(REPO / "db.sqlite3")


def test_it_reads_database_url():
    s = settings_with(DEBUG="1", DATABASE_URL="postgres://u:p@db:5432/steerlab")
    assert s["DATABASE"] == "django.db.backends.postgresql"
    assert s["DATABASE_NAME"] == "steerlab"


def test_it_rejects_an_unknown_database_url():
    assert "DATABASE_URL='nosuch://x' is not valid" in error_with(
        DEBUG="1", DATABASE_URL="nosuch://x"
    )


def test_it_keeps_channels_and_cache_in_process_without_redis():
    s = settings_with(DEBUG="1")
    assert s["CHANNEL_LAYER"] == "channels.layers.InMemoryChannelLayer"
    assert s["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"


def test_it_uses_redis_for_channels_and_cache_when_redis_url_is_set():
    s = settings_with(DEBUG="1", REDIS_URL="redis://localhost:6379/0")
    assert s["CHANNEL_LAYER"] == "channels_redis.core.RedisChannelLayer"
    assert s["CACHE"] == "django.core.cache.backends.redis.RedisCache"


def test_it_rejects_a_redis_url_without_scheme():
    assert "REDIS_URL='localhost:6379' is not valid" in error_with(
        DEBUG="1", REDIS_URL="localhost:6379"
    )


def test_it_defaults_to_the_embedded_model_on_auto_device():
    s = settings_with(DEBUG="1")
    assert s["STEERLAB_MODEL"] == "embedded"
    assert s["STEERLAB_DEVICE"] == "auto"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_it_accepts_devices(device):
    assert settings_with(DEBUG="1", STEERLAB_DEVICE=device)["STEERLAB_DEVICE"] == device


def test_it_rejects_an_unknown_device():
    assert "STEERLAB_DEVICE='gpu' is not valid" in error_with(DEBUG="1", STEERLAB_DEVICE="gpu")


def test_it_configures_one_bounded_orm_worker():
    q = settings_with(DEBUG="1")["Q_CLUSTER"]
    assert q["orm"] == "default"
    assert q["workers"] == 1
    assert q["retry"] > q["timeout"]
    assert q["max_attempts"] == 2


def test_it_refuses_a_retry_shorter_than_the_timeout():
    assert "Q_RETRY=60 must be greater than Q_TIMEOUT=600" in error_with(
        DEBUG="1", Q_TIMEOUT="600", Q_RETRY="60"
    )
