"""`load_vectors <file>`: register an existing vector file as a vector set: SteerLab's
safetensors file, or a GGUF control vector (repeng, llama.cpp, EasySteer) as one dimension."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from steering.services import gguf
from steering.engine import SteeringVectors, VectorFileError
from steering.engine.controlvector import ControlVectorError
from steering.services import vector_sets


class Command(BaseCommand):
    help = (
        "Register a steering-vector file as a vector set: a .safetensors file written by compute_vectors, "
        "or a .gguf control vector (give --dimension and the two end labels)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="path of the .safetensors or .gguf file")
        parser.add_argument("--name", default=None, help="name of the vector set (default: the file's name)")
        parser.add_argument("--dimension", default=None, help="GGUF: the name of the set's one dimension")
        parser.add_argument("--negative-label", default="", help="GGUF: the label of strength -1")
        parser.add_argument("--positive-label", default="", help="GGUF: the label of strength +1 (the file's direction)")

    def handle(self, *args, file: str, name: str | None, **options) -> None:
        if Path(file).suffix.lower() == ".gguf":
            return self._gguf(file, name, options)
        try:
            vectors = SteeringVectors.load(file)
        except VectorFileError as exc:
            raise CommandError(str(exc)) from exc
        vector_set = vector_sets.vector_set_register(vectors=vectors, name=name or Path(file).stem)
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered vector set #{vector_set.pk} '{vector_set.name}' for {vectors.model_id}: "
                f"{', '.join(vectors.dimensions)} on layers {vectors.layers}"
            )
        )

    def _gguf(self, file: str, name: str | None, options: dict) -> None:
        if not options["dimension"]:
            raise CommandError("A GGUF control vector needs --dimension (the name of its one dimension)")
        if not Path(file).is_file():
            raise CommandError(f"No file at {file}")
        try:
            with open(file, "rb") as upload:
                vector_set = gguf.vector_set_import_gguf(
                    upload=upload, name=name or Path(file).stem, dimension=options["dimension"],
                    negative_label=options["negative_label"], positive_label=options["positive_label"],
                    background=False,
                )
        except ControlVectorError as exc:
            raise CommandError(str(exc)) from exc
        if not vector_set.is_ready:
            raise CommandError(f"Vector set #{vector_set.pk} '{vector_set.name}' failed: {vector_set.error}")
        self.stdout.write(self.style.SUCCESS(
            f"Registered vector set #{vector_set.pk} '{vector_set.name}': {options['dimension']} on layers "
            f"{vector_set.layers}, functional range {vector_set.range_text(options['dimension'])}"
        ))
