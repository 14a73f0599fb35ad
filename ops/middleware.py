"""Middleware: request ids, the access log and HTTP metrics (`observe_requests`), and the
Content-Security-Policy header (`content_security_policy`).

Both work in sync and async chains alike: the chat view is async, and a sync-only middleware
would send every request through a thread hop."""

from __future__ import annotations

import logging
import re
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost
from django.utils.decorators import sync_and_async_middleware
from django.utils.functional import SimpleLazyObject, empty

from ops import metrics
from ops.logs import request_id

access_log = logging.getLogger("steerlab.request")

# A client's X-Request-ID is kept (so a proxy's id follows the request through the logs) only
# when it is short and plain: it is written into every log line of the request.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _both(handle, handle_async):
    """A middleware factory that calls `handle(request, get_response)` in a sync chain and
    `await handle_async(request, get_response)` in an async one."""

    def factory(get_response):
        if iscoroutinefunction(get_response):
            async def middleware(request):
                return await handle_async(request, get_response)

            markcoroutinefunction(middleware)
        else:
            def middleware(request):
                return handle(request, get_response)

        return middleware

    return sync_and_async_middleware(factory)


# ---- request ids, access log, metrics ---------------------------------------------------------


def _start(request) -> tuple[object, float]:
    given = request.headers.get("X-Request-ID", "")
    rid = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request.request_id = rid
    return request_id.set(rid), time.perf_counter()


def _known_user_id(request) -> int | None:
    """The user's id if authentication already ran for this request; never a database query
    of its own (AuthenticationMiddleware's user is lazy, DRF's token user is not)."""
    user = getattr(request, "user", None)
    if user is None or (isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    return user.pk if user.is_authenticated else None


def _finish(request, response, token, started: float):
    duration = time.perf_counter() - started
    match = getattr(request, "resolver_match", None)
    # The URL pattern, not the path: /api/vector-sets/17/ and /18/ are one series.
    route = "/" + match.route if match is not None and match.route else "(unmatched)"
    metrics.observe_http(request.method, route, response.status_code, duration)
    response["X-Request-ID"] = request.request_id
    access_log.info(
        "%s %s %s %.0fms",
        request.method,
        request.path,
        response.status_code,
        duration * 1000,
        extra={
            "user_id": _known_user_id(request),
            "method": request.method,
            # The path only: query strings can carry what should not be logged.
            "path": request.path,
            "route": route,
            "status": response.status_code,
            "duration_ms": round(duration * 1000, 1),
        },
    )
    request_id.reset(token)
    return response


def _observe(request, get_response):
    token, started = _start(request)
    return _finish(request, get_response(request), token, started)


async def _observe_async(request, get_response):
    token, started = _start(request)
    return _finish(request, await get_response(request), token, started)


observe_requests = _both(_observe, _observe_async)


# ---- Content-Security-Policy ------------------------------------------------------------------

# Everything from this origin only: no inline scripts or styles, no eval, no plugins, no framing.
# data: images are allowed for the icons Swagger UI and the admin embed in their CSS.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'; connect-src 'self'"
)


def _policy(request) -> str:
    # CSP Level 3 lets 'self' cover ws:/wss: to the same host, but not every browser in use
    # does, so the chat's websocket origin is named too (the host is already validated).
    try:
        host = request.get_host()
    except DisallowedHost:
        return POLICY
    return f"{POLICY} ws://{host} wss://{host}"


def _add_policy(request, response):
    if "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = _policy(request)
    return response


def _csp(request, get_response):
    return _add_policy(request, get_response(request))


async def _csp_async(request, get_response):
    return _add_policy(request, await get_response(request))


content_security_policy = _both(_csp, _csp_async)
