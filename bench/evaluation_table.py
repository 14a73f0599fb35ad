"""The evaluation table of the README: every shipped dimension × every extraction method.

Runs what the README's commands run, in one process so the model loads once: `bootstrap` (the
default CAA set), `compute_vectors --preference all --method probe|pca`, then
`evaluate_steering` for each dimension of each set; then prints the Markdown table (Effect at
−1, 0, +1, Spearman ρ, PNE at +1 and −1, the measured functional range) and writes the
reports and plots under --out.

    DEBUG=1 .venv/bin/python bench/evaluation_table.py --out evaluation [--limit 8] [--tokens 40]

Use a scratch database and media folder (DATABASE_URL, MEDIA_ROOT) to leave the site's alone.
On a busy machine, one process per method (`--methods probe`, each with its own database, all
with the same --out) finishes sooner. `--table-only` rebuilds the table from the reports
already under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")

METHODS = ("caa", "probe", "pca")
COLUMNS = ("effect_minus_1", "effect_0", "effect_plus_1", "spearman", "pne_plus_1", "pne_minus_1")


def _set_for(method: str):
    from steering import data
    from steering.models import VectorSet

    wanted = set(data.dimension_names())
    for vector_set in VectorSet.objects.filter(method=method, status=VectorSet.Status.READY, owner=None):
        if set(vector_set.dimension_names()) >= wanted:
            return vector_set
    return None


def compute(out: Path, limit: int, tokens: int, methods: list[str]) -> None:
    from django.core.management import call_command

    from steering import data

    call_command("migrate", verbosity=0)
    if "caa" in methods:
        call_command("bootstrap")  # the default set is the CAA one
    for method in methods:
        started = time.monotonic()
        if _set_for(method) is None:
            call_command("compute_vectors", preference="all", method=method, name=f"All six ({method})")
        print(f"[{method}] vectors ready in {time.monotonic() - started:.0f} s", flush=True)
        vector_set = _set_for(method)
        for dimension in data.dimension_names():
            report = out / f"{method}-{dimension}.json"
            if report.exists():
                continue
            call_command(
                "evaluate_steering", vector_set=vector_set.pk, dimension=dimension, limit=limit,
                max_new_tokens=tokens, output=str(report),
            )


def table(out: Path) -> str:
    lines = [
        "| dimension | method | range | Effect −1 | Effect 0 | Effect +1 | Spearman ρ | PNE +1 | PNE −1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for report_path in sorted(out.glob("*.json"), key=lambda p: (p.stem.split("-", 1)[1], METHODS.index(p.stem.split("-")[0]))):
        report = json.loads(report_path.read_text())
        summary = report["summary"]
        cells = ["—" if summary[c] is None else f"{summary[c]:+.3f}" if c != "spearman" else f"{summary[c]:.2f}" for c in COLUMNS]
        lines.append(f"| {report['dimension']} | {report['method']} | {report['functional_range']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("evaluation"))
    parser.add_argument("--limit", type=int, default=8, help="neutral prompts per strength")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per answer")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        import django

        django.setup()
        compute(args.out, args.limit, args.tokens, args.methods.split(","))
    print(table(args.out))


if __name__ == "__main__":
    main()
