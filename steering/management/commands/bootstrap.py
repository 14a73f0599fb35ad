"""First-run setup for `make setup`: the demo account (in development only, see
STEERLAB_DEMO_ACCOUNT) and the default vector set, with every shipped dimension (formality and
the paper's five). Idempotent: what exists is left alone, so running it again costs a second."""

from __future__ import annotations

import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from steering.data import catalog
from steering.models import VectorSet
from steering.serving.runtime import site_model, site_model_id
from steering.services import vector_sets

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "steerlab-demo"
DEFAULT_SET_NAME = "Default (six dimensions)"


class Command(BaseCommand):
    help = "Create the demo account and the default vector set (every shipped dimension) for the configured model."

    def handle(self, *args, **options) -> None:
        self.demo_account()

        dimensions = [vector_sets.dimension_import_default(name=name) for name in catalog.dimension_names()]
        model_id = site_model_id()
        ready = VectorSet.objects.filter(owner=None, model_id=model_id, status=VectorSet.Status.READY)
        for candidate in ready:
            if set(candidate.dimension_names()) >= {d.name for d in dimensions}:
                self.stdout.write(f"Default vector set ready: {candidate}")
                return
        VectorSet.objects.filter(owner=None, model_id=model_id, name=DEFAULT_SET_NAME).exclude(
            status=VectorSet.Status.READY
        ).delete()  # a failed or interrupted earlier attempt
        vector_set = vector_sets.vector_set_create(name=DEFAULT_SET_NAME, model_id=model_id, dimensions=dimensions)
        names = ", ".join(d.name for d in dimensions)
        self.stdout.write(f"Computing the default vector set ({names}) for {model_id} (once, a minute or two)…")
        vector_set = vector_sets.vector_set_compute(
            vector_set=vector_set,
            loaded=site_model(),
            # Extraction, then the functional-range search (the last fifth).
            report=lambda percent: self.stdout.write(f"\r  computing: {percent:3d} %", ending=""),
        )
        self.stdout.write("")
        if vector_set.status != VectorSet.Status.READY:
            self.stderr.write(f"Computing the default vector set failed: {vector_set.error}")
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Default vector set ready: {vector_set} ({vector_set.file.name})"))

    def demo_account(self) -> None:
        User = get_user_model()
        demo = User.objects.filter(username=DEMO_USERNAME).first()
        if not settings.STEERLAB_DEMO_ACCOUNT:
            # A database bootstrapped in development and then deployed keeps its demo user: its
            # published password must stop working, whatever else the account holds.
            if demo is not None and demo.check_password(DEMO_PASSWORD):
                demo.set_unusable_password()
                demo.save(update_fields=["password"])
                self.stdout.write(f"Locked the demo account {DEMO_USERNAME!r}: its published password no longer works.")
            self.stdout.write("No demo account: it is for development only (DEBUG=1).")
            return
        if demo is None:
            User.objects.create_user(DEMO_USERNAME, password=DEMO_PASSWORD)
            self.stdout.write(f"Created the demo account: {DEMO_USERNAME} / {DEMO_PASSWORD}")
        else:
            self.stdout.write(f"Demo account: {DEMO_USERNAME} / {DEMO_PASSWORD} (unless its password was changed)")
