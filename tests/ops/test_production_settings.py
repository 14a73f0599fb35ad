"""Production settings from the environment, each case read in a fresh interpreter (settings
are read once per process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEY = {"SECRET_KEY": "s3cret-for-the-settings-tests"}


def read_settings(*names, **env):
    script = (
        "import json; from steerlab_site import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {names!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={"PATH": os.environ.get("PATH", ""), **KEY, **env},
        capture_output=True, text=True, timeout=60,
    )
    return result


def settings_with(*names, **env) -> dict:
    result = read_settings(*names, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_with(**env) -> str:
    result = read_settings("DEBUG", **env)
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1]


HTTPS_SETTINGS = (
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER",
)


def test_plain_http_is_the_default():
    s = settings_with(*HTTPS_SETTINGS)
    assert s == dict.fromkeys(HTTPS_SETTINGS, False) | {"SECURE_HSTS_SECONDS": 0, "SECURE_PROXY_SSL_HEADER": None}


def test_https_turns_on_redirect_hsts_and_secure_cookies_but_not_preload():
    s = settings_with(*HTTPS_SETTINGS, HTTPS="1")
    assert s["SECURE_SSL_REDIRECT"] and s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_HSTS_SECONDS"] == 31536000 and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert s["SECURE_HSTS_PRELOAD"] is False


def test_each_https_setting_can_be_set_on_its_own():
    s = settings_with(*HTTPS_SETTINGS, HTTPS="1", SECURE_HSTS_SECONDS="3600", SECURE_SSL_REDIRECT="0")
    assert s["SECURE_HSTS_SECONDS"] == 3600 and s["SECURE_SSL_REDIRECT"] is False and s["SESSION_COOKIE_SECURE"]


def test_the_proxy_header_is_named_in_its_http_form():
    s = settings_with("SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_bad_values_stop_start_up_naming_the_variable():
    assert "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto: https' is not valid" in error_with(
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https"
    )
    assert "METRICS_TOKEN='short' is not valid: expected at least 16 characters" in error_with(METRICS_TOKEN="short")
    assert "LOG_FORMAT='xml' is not valid" in error_with(LOG_FORMAT="xml")
    assert "SECURE_HSTS_SECONDS='-1' is not valid" in error_with(SECURE_HSTS_SECONDS="-1")


def test_log_format_picks_the_formatter():
    assert settings_with("LOGGING")["LOGGING"]["handlers"]["console"]["formatter"] == "plain"
    assert settings_with("LOGGING", LOG_FORMAT="json")["LOGGING"]["handlers"]["console"]["formatter"] == "json"


def test_postgres_and_redis_urls_move_every_shared_part_out_of_the_process():
    s = settings_with(
        "DATABASES", "CHANNEL_LAYERS", "CACHES", "Q_CLUSTER", "REST_FRAMEWORK",
        DATABASE_URL="postgres://steer:pw@db:5432/steerlab", REDIS_URL="redis://cache:6379/2",
    )
    assert s["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert s["CHANNEL_LAYERS"]["default"] == {
        "BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://cache:6379/2"]},
    }
    # DRF's throttles keep their counters in the default cache: Redis, so limits hold across
    # daphne processes.
    assert s["CACHES"]["default"] == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://cache:6379/2",
    }
    assert s["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]
    # django-q2's broker is the ORM on the default database: PostgreSQL here.
    assert s["Q_CLUSTER"]["orm"] == "default"


def test_trusted_proxies_are_none_by_default_and_written_canonically():
    assert settings_with("STEERLAB_TRUSTED_PROXIES")["STEERLAB_TRUSTED_PROXIES"] == []
    s = settings_with("STEERLAB_TRUSTED_PROXIES", STEERLAB_TRUSTED_PROXIES="172.30.80.10, 10.1.0.0/16,fd00::1")
    assert s["STEERLAB_TRUSTED_PROXIES"] == ["172.30.80.10/32", "10.1.0.0/16", "fd00::1/128"]


def test_a_trusted_proxy_that_is_not_an_address_stops_start_up():
    assert "STEERLAB_TRUSTED_PROXIES='proxy.internal' is not valid" in error_with(
        STEERLAB_TRUSTED_PROXIES="10.0.0.1,proxy.internal"
    )
