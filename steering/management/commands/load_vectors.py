"""`load_vectors <file>`: register an existing safetensors vector file as a vector set."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from steering import services
from steering.engine import SteeringVectors, VectorFileError


class Command(BaseCommand):
    help = "Register a safetensors steering-vector file (as written by compute_vectors) as a vector set."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="path of the .safetensors file")
        parser.add_argument("--name", default=None, help="name of the vector set (default: the file's name)")

    def handle(self, *args, file: str, name: str | None, **options) -> None:
        try:
            vectors = SteeringVectors.load(file)
        except VectorFileError as exc:
            raise CommandError(str(exc)) from exc
        vector_set = services.vector_set_register(vectors=vectors, name=name or Path(file).stem)
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered vector set #{vector_set.pk} '{vector_set.name}' for {vectors.model_id}: "
                f"{', '.join(vectors.dimensions)} on layers {vectors.layers}"
            )
        )
