"""`compute_vectors`: the seed CLI's verb. Computes a vector set from two example files (or
from shipped dimensions) and registers it, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from steering import files

from steering.data import catalog
from steering.engine import ModelNotFound, load_model
from steering.engine.loading import model_id_for
from steering.models import VectorSet
from steering.serving import runtime
from steering.services import vector_sets

MIN_EXAMPLES = 2


def read_examples(path: str, end: str) -> list[str]:
    """A JSON list of texts, or an object with an "examples" list."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"The {end} data file {path} does not exist")
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"The {end} data file {path} is not valid JSON: {exc}") from exc
    if isinstance(content, dict):
        content = content.get("examples")
    if not isinstance(content, list) or not all(isinstance(t, str) and t.strip() for t in content):
        raise CommandError(f"The {end} data file {path} must hold a JSON list of non-empty texts")
    if len(content) < MIN_EXAMPLES:
        raise CommandError(f"The {end} data file {path} has {len(content)} texts; at least {MIN_EXAMPLES} are needed")
    return [t.strip() for t in content]


class Command(BaseCommand):
    help = "Compute steering vectors for one preference from positive and negative example files."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", default=None, help="hub name, local path or 'embedded' (default: STEERLAB_MODEL)")
        parser.add_argument(
            "--preference", required=True,
            help="dimension name, e.g. formality; without data files, shipped dimensions, comma-separated "
            f"(or 'all': {', '.join(catalog.dimension_names())})",
        )
        parser.add_argument("--positive-data", default=None, help="JSON list of texts for the positive end")
        parser.add_argument("--negative-data", default=None, help="JSON list of texts for the negative end")
        parser.add_argument("--method", default="caa", choices=VectorSet.Method.values, help="extraction method")
        parser.add_argument(
            "--top-k", type=int, default=None,
            help="steer the k layers that separate the ends best on held-out data (default: the middle half)",
        )
        parser.add_argument("--positive-label", default=None, help="name of the positive end (default: more <preference>)")
        parser.add_argument("--negative-label", default=None, help="name of the negative end (default: less <preference>)")
        parser.add_argument("--name", default=None, help="name of the vector set")
        parser.add_argument("--output", default=None, help="also write the vector file here")
        parser.add_argument("--device", default=None, help="auto, cpu, cuda… (default: STEERLAB_DEVICE)")

    def handle(self, *args, **opts) -> None:
        if (opts["positive_data"] is None) != (opts["negative_data"] is None):
            raise CommandError("Give both --positive-data and --negative-data, or neither (shipped dimensions)")
        shipped = opts["positive_data"] is None
        if shipped:
            names = catalog.dimension_names() if opts["preference"] == "all" else opts["preference"].split(",")
            unknown = [n for n in names if n not in catalog.dimension_names()]
            if unknown:
                raise CommandError(
                    f"No shipped dimension {', '.join(unknown)} (there are: {', '.join(catalog.dimension_names())}); "
                    "give --positive-data and --negative-data for a new one"
                )
        else:
            positive = read_examples(opts["positive_data"], "positive")
            negative = read_examples(opts["negative_data"], "negative")
        if opts["top_k"] is not None and opts["top_k"] < 1:
            raise CommandError("--top-k must be at least 1")
        model = opts["model"] or settings.STEERLAB_MODEL
        self.stdout.write(f"Loading {model}…")
        try:
            # Under the site's system prompt: the vectors are read where they will steer.
            loaded = load_model(model, device=opts["device"] or settings.STEERLAB_DEVICE, system_prompt=runtime.site_system_prompt())
        except (ModelNotFound, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if opts["top_k"] is not None and opts["top_k"] >= loaded.num_layers:
            raise CommandError(f"--top-k must be below the model's {loaded.num_layers} layers")
        if shipped:
            dimensions = [vector_sets.dimension_import_default(name=name) for name in names]
        else:
            name = opts["preference"]
            dimensions = [
                vector_sets.dimension_update_or_create(
                    name=name,
                    positive=positive,
                    negative=negative,
                    negative_label=opts["negative_label"] or f"less {name}",
                    positive_label=opts["positive_label"] or f"more {name}",
                )
            ]
        vector_set = vector_sets.vector_set_create(
            name=opts["name"] or f"{opts['preference']} ({opts['method']})",
            model_id=model_id_for(model),
            dimensions=dimensions,
            method=opts["method"],
            top_k=opts["top_k"],
        )
        with tqdm(total=100, desc="computing", unit="%", file=self.stdout) as bar:
            vector_set = vector_sets.vector_set_compute(
                vector_set=vector_set, loaded=loaded, report=lambda percent: bar.update(percent - bar.n)
            )
            if vector_set.status == VectorSet.Status.READY:
                bar.update(100 - bar.n)
        if vector_set.status != VectorSet.Status.READY:
            raise CommandError(f"Computing the vectors failed: {vector_set.error}")
        if opts["output"]:
            files.copy_out(vector_set.file, Path(opts["output"]))
            self.stdout.write(f"Wrote {opts['output']}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Vector set #{vector_set.pk} '{vector_set.name}' is ready: layers {vector_set.layers}, "
                "functional range " + ", ".join(f"{dim} {vector_set.range_text(dim)}" for dim in sorted(vector_set.functional_range))
                + "; said in words where they apply: " + (", ".join(vector_set.worded_dimensions) or "none")
            )
        )
