"""Log formatting for operations: one JSON object a line (LOG_FORMAT=json) or plain text, each
record tagged with the id of the request or websocket it belongs to, and secrets scrubbed.

`request_id` is a ContextVar set by the request middleware (and the websocket wrapper in
`ops.metrics`); asgiref copies context into the threads that run sync views and into the
tasks a consumer starts, so every log line written on behalf of a request carries its id.

Secrets are scrubbed from the formatted text, whatever logged them: the values of SECRET_KEY,
METRICS_TOKEN and the database and Redis passwords, the password of any URL with credentials
(`scheme://user:password@`), and `Authorization` header values.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import datetime, timezone

request_id: ContextVar[str] = ContextVar("steerlab_request_id", default="")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# `extra=` values that can carry cookies and headers (Django's django.request logger attaches
# the request itself): never written out.
_NEVER = frozenset({"request", "scope", "headers"})

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_AUTHORIZATION = re.compile(r"\b(authorization[\"']?\s*[:=]\s*[\"']?(?:token|bearer|basic)?\s*)[^\s\"',]+", re.IGNORECASE)
REDACTED = "[redacted]"


def _configured_secrets() -> list[str]:
    """The secret values of this process's settings, longest first (read when first needed:
    logging is configured before the settings module has finished loading)."""
    from django.conf import settings

    values = [getattr(settings, "SECRET_KEY", ""), getattr(settings, "METRICS_TOKEN", "")]
    values += [db.get("PASSWORD", "") for db in getattr(settings, "DATABASES", {}).values()]
    redis = re.match(r"\w+://[^:/@]*:([^@]+)@", getattr(settings, "REDIS_URL", "") or "")
    if redis:
        values.append(redis.group(1))
    # Very short values would scrub ordinary words out of every message.
    return sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)
    return _AUTHORIZATION.sub(rf"\g<1>{REDACTED}", text)


class RequestContext(logging.Filter):
    """Adds `request_id` (empty outside a request) to every record a handler sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            # Django logs 4xx/5xx responses after the middleware has returned, with the
            # request attached: its id is on the request.
            attached = getattr(getattr(record, "request", None), "request_id", "")
            record.request_id = request_id.get() or attached
        return True


class _Redacting(logging.Formatter):
    _secrets: list[str] | None = None

    def secrets(self) -> list[str]:
        if self._secrets is None:
            try:
                self._secrets = _configured_secrets()
            except Exception:  # settings not configured (yet): scrub the patterns only, retry next time
                return []
        return self._secrets


class PlainFormatter(_Redacting):
    """`time level logger [request id] message`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "")
        record.request_tag = f" [{rid}]" if rid else ""
        return redact(super().format(record), self.secrets())


class JsonFormatter(_Redacting):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request_id, the
    record's `extra=` fields (user_id, method, path, route, status, duration_ms for requests),
    and the traceback as `exc_info` text."""

    def format(self, record: logging.LogRecord) -> str:
        secrets = self.secrets()
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), secrets),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key in _NEVER or key.startswith("_") or key == "request_tag":
                continue
            if isinstance(value, str):
                value = redact(value, secrets)
            elif not isinstance(value, (int, float, bool, type(None))):
                value = redact(repr(value), secrets)
            entry[key] = value
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info), secrets)
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info), secrets)
        return json.dumps(entry, ensure_ascii=False)
