"""`export_vectors <set id> --format gguf --dimension D --strength S -o FILE`: one dimension of
a vector set as a llama.cpp / repeng control vector (or `--format safetensors`: the set's own
file, every dimension)."""

from __future__ import annotations

import math
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from steering import files
from steering.services import gguf
from steering.engine.controlvector import ControlVectorError
from steering.models import VectorSet


class Command(BaseCommand):
    help = "Export a vector set: a GGUF control vector for llama.cpp and repeng, or its safetensors file."

    def add_arguments(self, parser) -> None:
        parser.add_argument("vector_set", type=int, help="id of the vector set")
        parser.add_argument("--format", choices=["gguf", "safetensors"], default="gguf")
        parser.add_argument("--dimension", default=None, help="dimension to export (gguf; optional with one)")
        parser.add_argument("--strength", type=float, default=1.0,
                            help="SteerLab strength the file adds at llama.cpp's scale 1 (gguf; default 1)")
        parser.add_argument("-o", "--output", default=None, help="file to write (default: a name in this folder)")

    def handle(self, *args, vector_set: int, format: str, dimension: str | None, strength: float,
               output: str | None, **options) -> None:
        found = VectorSet.objects.filter(pk=vector_set).first()
        if found is None:
            raise CommandError(f"Vector set {vector_set} not found")
        if not found.is_ready or not found.file:
            raise CommandError(f"Vector set {vector_set} is {found.status}, not ready")
        if format == "safetensors":
            target = Path(output or f"vector-set-{found.pk}.safetensors")
            files.copy_out(found.file, target)
            self.stdout.write(self.style.SUCCESS(f"Wrote {target}"))
            return
        names = found.dimension_names()
        dimension = dimension or (names[0] if len(names) == 1 else None)
        if dimension is None:
            raise CommandError(f"Choose a dimension with --dimension: {', '.join(names)}")
        if not math.isfinite(strength) or strength == 0 or abs(strength) > 1:
            raise CommandError("--strength must be a non-zero number in -1…1")
        target = Path(output or gguf.export_filename(found, dimension, strength))
        try:
            gguf.vector_set_export_gguf(vector_set=found, dimension=dimension, strength=strength, path=target)
        except (ControlVectorError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {target}: {dimension} at strength {strength:+g} "
            f"(llama-cli --control-vector-scaled {target}:1.0 adds the same)"
        ))
