"""Security headers on real responses, through the whole middleware stack, with the settings
HTTPS=1 and SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto produce."""

import re
from pathlib import Path

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parents[2]
# As a TLS-terminating proxy forwards a browser's request: its Host, and the scheme in a header.
PROXIED_HTTPS = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_HOST": "testserver"}


@pytest.fixture
def https(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


def directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}


@pytest.mark.django_db
def test_a_page_behind_the_proxy_carries_every_header(https):
    response = Client().get("/accounts/login/", **PROXIED_HTTPS)

    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    csp = directives(response["Content-Security-Policy"])
    assert csp["default-src"] == csp["script-src"] == csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    # The chat's websocket: this host only, over ws: or wss:.
    assert csp["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
    assert response.cookies["csrftoken"]["secure"]


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https(https):
    response = Client().get("/accounts/login/")

    assert response.status_code == 301
    assert response["Location"] == "https://testserver/accounts/login/"


@pytest.mark.django_db
def test_probes_from_inside_are_not_redirected(https, charlie, settings, tmp_path):
    # A model that fails at once: the health probe then answers without loading the real one.
    settings.STEERLAB_MODEL = str(tmp_path / "no-model-here")
    client = Client()
    client.force_login(charlie)

    assert client.get("/metrics").status_code == 200
    assert client.get("/api/health/").status_code == 503  # answered, not redirected (301)


@pytest.mark.django_db
def test_the_api_docs_need_nothing_from_another_origin_or_inline(https):
    page = Client().get("/api/docs/", **PROXIED_HTTPS)

    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") or s.startswith("?") for s in sources), sources
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html
    script = next(s for s in sources if "script" in s)
    assert Client().get("/api/docs/" + script if script.startswith("?") else script, **PROXIED_HTTPS).status_code == 200


# Inline code and styles that the policy (script-src 'self', style-src 'self') would block.
INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
    "inline event handler": re.compile(r"<[^>]+\son[a-z]+\s*=", re.I),
    "style attribute": re.compile(r"<[^>]+\sstyle\s*=", re.I),
    "<style> block": re.compile(r"<style[\s>]", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}
SCRIPT_HAZARDS = {
    "eval": re.compile(r"\beval\s*\(|new\s+Function\s*\("),
    "string timer": re.compile(r"set(?:Timeout|Interval)\s*\(\s*[\"'`]"),
    "inline handler or style set as an attribute": re.compile(r"setAttribute\(\s*[\"'](?:on[a-z]+|style)[\"']"),
    "markup with handlers or styles": re.compile(r"innerHTML[^;]*(?:\son[a-z]+=|style=)", re.I),
}


def hazards(paths, patterns) -> list[str]:
    return [
        f"{path.relative_to(REPO)}: {what}" for path in paths for what, pattern in patterns.items()
        if pattern.search(path.read_text())
    ]


def test_no_template_needs_inline_script_or_style():
    templates = sorted((REPO / "templates").rglob("*.html")) + sorted(REPO.glob("*/templates/**/*.html"))
    assert templates and hazards(templates, INLINE) == []


def test_no_markup_built_in_python_needs_inline_script_or_style():
    # format_html() in the admin and views: the same rules as templates.
    sources = [p for app in ("accounts", "ops", "steering", "steerlab_site") for p in sorted((REPO / app).rglob("*.py"))]
    assert sources and hazards(sources, {k: v for k, v in INLINE.items() if k != "javascript: URL"}) == []


def test_no_script_needs_eval_or_inline_handlers():
    scripts = sorted((REPO / "static" / "js").rglob("*.js"))
    assert scripts and hazards(scripts, SCRIPT_HAZARDS) == []
