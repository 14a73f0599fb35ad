"""Run the inference service as its own process (STEERLAB_INFERENCE=worker, with REDIS_URL)."""

import asyncio

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from steering import runtime
from steering.inference.worker import InferenceWorker


class Command(BaseCommand):
    help = "Serve generation requests from the channel layer with the site's model (one per GPU)."

    def handle(self, *args, **options):
        layer = get_channel_layer()
        if layer is None or "InMemory" in type(layer).__name__:
            raise CommandError(
                "The inference worker needs a channel layer shared between processes: set REDIS_URL."
            )
        self.stdout.write(f"Loading {settings.STEERLAB_MODEL} …")
        scheduler = runtime.site_scheduler()
        self.stdout.write(self.style.SUCCESS(f"Inference worker ready: {runtime.site_model_id()}"))
        try:
            asyncio.run(InferenceWorker(layer, scheduler).run())
        except KeyboardInterrupt:
            pass
