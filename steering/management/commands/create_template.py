"""`create_template <dimension>`: example files to fill in for `compute_vectors`."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from steering.data import catalog

PLACEHOLDERS = {
    "positive": [
        "Replace these lines with texts that show the POSITIVE end of '{dim}'.",
        "Write at least 50, each a sentence or two, in the voice of an assistant's reply.",
    ],
    "negative": [
        "Replace these lines with texts that show the NEGATIVE end of '{dim}'.",
        "Pair them with the positive ones where you can: the same content, the other end.",
    ],
}


class Command(BaseCommand):
    help = "Write <dimension>_positive.json and <dimension>_negative.json to fill in with example texts."

    def add_arguments(self, parser) -> None:
        parser.add_argument("dimension", help="name of the preference dimension, e.g. formality")
        parser.add_argument("--output-dir", default="data", help="folder for the two files (default: data)")
        parser.add_argument("--force", action="store_true", help="overwrite existing files")

    def handle(self, *args, dimension: str, output_dir: str, force: bool, **options) -> None:
        name = slugify(dimension).replace("-", "_")
        if not name:
            raise CommandError(f"{dimension!r} is not a usable dimension name: use letters, digits and _")
        folder = Path(output_dir)
        paths = {end: folder / f"{name}_{end}.json" for end in ("positive", "negative")}
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing and not force:
            raise CommandError(f"{', '.join(existing)} already exist; pass --force to overwrite")
        # A shipped dimension starts from its own examples, a new one from instructions.
        if name in catalog.dimension_names():
            positive, negative = catalog.examples(name)
            contents = {"positive": positive, "negative": negative}
        else:
            contents = {end: [line.format(dim=name) for line in lines] for end, lines in PLACEHOLDERS.items()}
        folder.mkdir(parents=True, exist_ok=True)
        for end, path in paths.items():
            path.write_text(json.dumps(contents[end], indent=2, ensure_ascii=False) + "\n")
            self.stdout.write(f"Wrote {path} ({len(contents[end])} examples)")
        self.stdout.write(
            f"Edit them, then: manage.py compute_vectors --preference {name} "
            f"--positive-data {paths['positive']} --negative-data {paths['negative']}"
        )
