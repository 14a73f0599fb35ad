"""What /metrics reads of serving, at scrape time: this process's scheduler (queue depth,
active generations, whether the model is loaded), worker mode's failovers (counted in Redis by
the workers), and a count of every generation as its InteractionLog is recorded. The metrics
themselves and the registry are ops's (`ops.metrics`); steering registers these from its app's
`ready()`, so that ops, the cross-cutting part, imports nothing of steering."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db.models.signals import post_save
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.process_collector import ProcessCollector

from ops import metrics
from steering.models import InteractionLog
from steering.serving import redis_streams

log = logging.getLogger(__name__)


def _interaction_recorded(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        metrics.observe_generation(
            source=instance.source,
            status=instance.status,
            tokens=instance.tokens,
            latency_ms=instance.latency_ms,
            first_token_ms=instance.first_token_ms,
        )


class SchedulerCollector(metrics.ScrapeTimeCollector):
    """This process's inference scheduler, read at scrape time; a process that has not loaded
    the model reports zeros and model_loaded 0 (a scrape never loads it)."""

    def collect(self):
        # Here, not at the top: site imports torch and transformers, which a process that
        # only migrates or checks (every one installs these collectors) need not load.
        from steering.serving import runtime

        depth = runtime.inference_queue_depth()
        yield metrics.gauge("steerlab_inference_waiting", "Generations queued for this process's model.", depth.get("waiting", 0))
        yield metrics.gauge("steerlab_inference_active", "Generations decoding in this process's model now.", depth.get("active", 0))
        yield metrics.gauge("steerlab_model_loaded", "1 once this process has loaded the site model.", int(runtime.site_model_loaded()))


class WorkerQueueCollector(metrics.ScrapeTimeCollector):
    """Worker mode's failovers, counted in Redis by the workers, so any process's scrape shows
    the whole deployment's: requests taken over from a silent worker (claims) and streams
    resumed from where they stopped (resumptions). Nothing in the other modes."""

    def collect(self):
        if settings.STEERLAB_INFERENCE != "worker" or not settings.REDIS_URL:
            return
        try:
            with redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2) as client:
                raw = client.hgetall(redis_streams.stats_key())
        except redis.RedisError as exc:  # the scrape still answers; health reports Redis
            log.warning("Worker queue metrics unavailable: %s", exc)
            return
        counts = {k.decode(): int(v) for k, v in raw.items()}
        yield CounterMetricFamily(
            "steerlab_inference_claims", "Requests a worker took over from a worker silent past the window.",
            value=counts.get("claims", 0),
        )
        yield CounterMetricFamily(
            "steerlab_inference_resumptions", "Streams a worker resumed where a dead worker's stopped.",
            value=counts.get("resumptions", 0),
        )


def worker_registry() -> CollectorRegistry:
    """What `manage.py inference_worker --metrics-port` serves: its scheduler and its process
    (no database queries from the exporter's threads)."""
    registry = CollectorRegistry()
    registry.register(SchedulerCollector())
    registry.register(WorkerQueueCollector())
    ProcessCollector(registry=registry)
    return registry


_installed = False


def install() -> None:
    """Register the scrape-time collectors and the generation counter, once per process."""
    global _installed
    if _installed:
        return
    REGISTRY.register(SchedulerCollector())
    REGISTRY.register(WorkerQueueCollector())
    post_save.connect(_interaction_recorded, sender=InteractionLog, dispatch_uid="steering.serving.collectors.generations")
    _installed = True
