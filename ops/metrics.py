"""Prometheus metrics, in the text exposition format of `prometheus_client`.

What is counted where:
- HTTP requests by method, route (the URL pattern) and status, and their duration: the
  request middleware (`ops.middleware.observe_requests`).
- Websocket connections open and accepted: `count_websockets`, around the websocket app in
  asgi.py.
- Generations by source and status, generated tokens, decoding speed (tokens/s) and time to
  first token: `observe_generation`, called for each InteractionLog as it is recorded (every
  chat turn records one, in the process that served it, whichever backend generated it).
- Inference queue depth and active generations, and whether the model is loaded; worker
  mode's claims and resumptions: collected by `steering.serving.collectors`, which steering
  registers here when its app is ready (ops, the cross-cutting part, imports no steering).
- django-q2 tasks waiting and failed: counted in the database at scrape time, so they hold for
  the whole cluster, whichever process ran the task.

Counters are per process: with several daphne processes, scrape each one (see the README).
"""

from __future__ import annotations

import logging
import time
import uuid

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from ops.logs import request_id

log = logging.getLogger(__name__)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "steerlab_http_requests", "HTTP requests answered, by method, route and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "steerlab_http_request_duration_seconds",
    "Time to answer an HTTP request (to the response's start for streamed bodies).",
    ["method", "route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WEBSOCKETS_OPEN = Gauge("steerlab_websocket_connections", "Websocket connections open now.")
WEBSOCKETS_ACCEPTED = Counter("steerlab_websocket_connections_accepted", "Websocket connections accepted.")
GENERATIONS = Counter(
    "steerlab_generations", "Chat generations recorded, by source (api, ws, calibrate) and status.", ["source", "status"]
)
TOKENS = Counter("steerlab_generated_tokens", "Tokens generated for chat turns, by source.", ["source"])
TOKENS_PER_SECOND = Histogram(
    "steerlab_generation_tokens_per_second",
    "Decoding speed of one generation: tokens after the first over the time after the first.",
    buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500),
)
FIRST_TOKEN = Histogram(
    "steerlab_generation_first_token_seconds",
    "Time from a generation's submission to its first token (queueing and prefill).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    # Any string is a valid method on the wire: unknown ones share one label value, so a
    # client cannot mint series.
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def observe_generation(*, source: str, status: str, tokens: int, latency_ms: int, first_token_ms: int | None) -> None:
    GENERATIONS.labels(source, status).inc()
    TOKENS.labels(source).inc(tokens)
    if first_token_ms is not None:
        FIRST_TOKEN.observe(first_token_ms / 1000)
        decode_s = (latency_ms - first_token_ms) / 1000
        if tokens >= 2 and decode_s > 0:
            TOKENS_PER_SECOND.observe((tokens - 1) / decode_s)


class ScrapeTimeCollector:
    """A collector read at scrape time only (steering's serving collectors are others)."""

    def describe(self):
        # Registering a collector without describe() makes the registry collect at once, at
        # start-up: before the database is ready, and for nothing.
        return []


class TaskCollector(ScrapeTimeCollector):
    """django-q2's queue and failures, counted in the database (shared by the cluster)."""

    def collect(self):
        from django.db import DatabaseError
        from django.db.models import Count
        from django_q.models import Failure, OrmQ

        try:
            waiting = OrmQ.objects.count()
            # order_by(): no default ordering may split the groups.
            failed = dict(Failure.objects.values_list("func").annotate(n=Count("pk")).order_by())
        except DatabaseError as exc:  # the scrape still answers; health reports the database
            log.warning("Task metrics unavailable: %s", exc)
            return
        yield gauge("steerlab_tasks_queued", "django-q2 tasks waiting in the ORM broker.", waiting)
        family = GaugeMetricFamily(
            "steerlab_tasks_failed", "Failed django-q2 tasks on record (the admin's Failed tasks), by function.", labels=["func"]
        )
        for func, count in sorted(failed.items()):
            family.add_metric([func], count)
        yield family


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def count_websockets(app):
    """ASGI middleware around the websocket app: counts connections accepted and open, tags
    the connection's log lines with an id, and logs its end."""
    access_log = logging.getLogger("steerlab.request")

    async def wrapper(scope, receive, send):
        accepted = False
        started = time.perf_counter()

        async def counting_send(message):
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKETS_ACCEPTED.inc()
                WEBSOCKETS_OPEN.inc()
            await send(message)

        token = request_id.set("ws-" + uuid.uuid4().hex)
        try:
            return await app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKETS_OPEN.dec()
            seconds = time.perf_counter() - started
            access_log.info(
                "WS %s %s after %.1fs", scope.get("path", ""), "closed" if accepted else "refused", seconds,
                extra={"path": scope.get("path", ""), "accepted": accepted, "duration_ms": round(seconds * 1000, 1)},
            )
            request_id.reset(token)

    return wrapper


_installed = False


def install() -> None:
    """Register the scrape-time collectors of the cluster's tasks, once per process."""
    global _installed
    if _installed:
        return
    REGISTRY.register(TaskCollector())
    _installed = True
