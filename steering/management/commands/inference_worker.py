"""Run the inference service as its own process (STEERLAB_INFERENCE=worker, with REDIS_URL)."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from steering.serving import runtime
from steering.serving.collectors import worker_registry
from steering.serving.worker import InferenceWorker


class Command(BaseCommand):
    help = "Serve generation requests from the Redis request stream with the site's model (one per GPU)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--metrics-port", type=int, default=0,
            help="Serve this worker's Prometheus metrics (queue depth, active generations, process) "
                 "on this port, once the model is loaded; 0 (the default) serves none.",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1", help="Address the metrics port binds (default 127.0.0.1).")

    def handle(self, *args, **options):
        if not settings.REDIS_URL:
            raise CommandError("The inference worker takes its requests from Redis: set REDIS_URL.")
        self.stdout.write(f"Loading {settings.STEERLAB_MODEL} …")
        scheduler = runtime.site_scheduler()
        if options["metrics_port"]:
            # Started after the model has loaded, so an answering port also means "ready"
            # (the container health check relies on it).
            from prometheus_client import start_http_server

            start_http_server(options["metrics_port"], options["metrics_host"], registry=worker_registry())
            self.stdout.write(f"Metrics on http://{options['metrics_host']}:{options['metrics_port']}/metrics")
        self.stdout.write(self.style.SUCCESS(
            f"Inference worker ready: {runtime.site_model_id()} ({settings.STEERLAB_ENGINE} engine)"))
        try:
            asyncio.run(InferenceWorker(scheduler).run())
        except KeyboardInterrupt:
            pass
