"""The evaluation table: every shipped dimension × every extraction method, beside plain
prompting and prompting + steering.

Runs what the documented commands run, in one process so the model loads once:
`compute_vectors --preference all --method caa|probe|pca`, then `evaluate_steering` for each
dimension of each set (with `--split heldout` by default: prompts and reference texts that
extraction and the range search never see); then prints the Markdown table (range, Effect at
−1, 0, +1, Spearman ρ of the means and of every answer, PNE and perplexity ratio at ±1) and
writes the reports and plots under --out.

    DEBUG=1 .venv/bin/python bench/evaluation_table.py --out evaluation [--limit 12] [--tokens 48]

STEERLAB_DTYPE (float32, bfloat16, auto) chooses the dtype; it is recorded with the settings, so
a float32 and a bfloat16 table never mix (give each its own --out).

The baselines ("prompt": a graded system prompt, no steering; "prompt+steering": that system
prompt with the CAA set's steering) are measured in the CAA reports.

Stale results are never mixed in silently. Every report records the table's settings (split,
prompts, tokens, strengths, model, embedder, range search, and fingerprints of the shipped data
and of the engine's code); a report under --out made with other settings stops the run with
the differences (start again with --fresh, or use another --out), and `--table-only` refuses
reports whose settings differ. Vector sets are looked up by a name carrying the fingerprint of
what they depend on, so a set computed from earlier data or code is never reused; and the
database's dimensions must hold the shipped examples.

Use a scratch database and media folder (DATABASE_URL, MEDIA_ROOT) to leave the site's alone.
On a busy machine, one process per method (`--methods probe`, each with its own database, all
with the same --out) finishes sooner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("caa", "probe", "pca")
BASELINES = ("prompt", "prompt+steering")
STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
COLUMNS = (
    "effect_minus_1", "effect_0", "effect_plus_1", "spearman_of_means", "spearman",
    "pne_plus_1", "pne_minus_1", "ppl_ratio_plus_1", "ppl_ratio_minus_1",
)


class StaleResults(SystemExit):
    pass


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def table_settings(args) -> dict:
    """Everything a report's figures depend on. Two reports are comparable only when these
    are equal; `vectors` is the part the vector sets depend on."""
    from django.conf import settings

    from steering.serving import runtime

    vectors = {
        "model": runtime.site_model_id(),
        "range_search": settings.STEERLAB_RANGE_SEARCH,
        "range_ppl_factor": settings.STEERLAB_RANGE_PPL_FACTOR,
        "data": _fingerprint(list((ROOT / "steering/data").rglob("*.json"))),
        "engine": _fingerprint(list((ROOT / "steering/engine").glob("*.py"))),
    }
    return {
        "split": args.split,
        # The dtype the evaluation generates in (STEERLAB_DTYPE as resolved on this machine).
        # `compute_vectors` extracts and searches the range in float32 whatever the setting.
        "dtype": str(runtime.site_model().dtype).removeprefix("torch."),
        "limit": args.limit,
        "tokens": args.tokens,
        "baselines": not args.no_baselines,
        "strengths": list(STRENGTHS),
        "embedder": settings.STEERLAB_EMBEDDER,
        "vectors": vectors,
    }


def differences(mine: dict, theirs: dict | None) -> list[str]:
    if theirs is None:
        return ["no recorded settings (made before settings were recorded)"]
    keys = sorted(set(mine) | set(theirs))
    return [f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in keys if mine.get(k) != theirs.get(k)]


def check_out_folder(out: Path, settings: dict) -> None:
    """Refuse to add to reports made with other settings."""
    for path in sorted(out.glob("*.json")):
        found = json.loads(path.read_text()).get("table_settings")
        diff = differences(settings, found)
        if diff:
            raise StaleResults(
                f"{path} was made with other settings ({'; '.join(diff)}). "
                "Use --fresh to delete the reports under --out, or another --out."
            )


def check_dimensions() -> None:
    """The database's dimensions must be the shipped ones: vectors computed from examples
    edited in the admin (or from an older checkout) would not be what the table claims."""
    from steering.data import catalog
    from steering.services import vector_sets

    for name in catalog.dimension_names():
        dimension = vector_sets.dimension_import_default(name=name)
        positive, negative = catalog.examples(name)
        if (dimension.positive_examples, dimension.negative_examples) != (positive, negative):
            raise StaleResults(
                f"The database's dimension {name!r} holds other examples than steering/data/dimensions/{name}.json; "
                "use a fresh scratch database (DATABASE_URL)."
            )


def vector_set_for(method: str, fingerprint: str):
    """The shared set of all six dimensions computed under exactly these settings: found by
    its name, or computed now."""
    from django.core.management import call_command

    from steering.models import VectorSet

    name = f"Evaluation table ({method}, {fingerprint})"
    found = VectorSet.objects.filter(name=name, method=method, status=VectorSet.Status.READY, owner=None).first()
    if found is None:
        call_command("compute_vectors", preference="all", method=method, name=name)
        found = VectorSet.objects.get(name=name, status=VectorSet.Status.READY)
    return found


def compute(out: Path, args, settings: dict) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    check_dimensions()
    fingerprint = hashlib.sha256(json.dumps(settings["vectors"], sort_keys=True).encode()).hexdigest()[:10]
    for method in args.methods:
        started = time.monotonic()
        vector_set = vector_set_for(method, fingerprint)
        print(f"[{method}] vectors ready in {time.monotonic() - started:.0f} s: set {vector_set.pk}", flush=True)
        for dimension in args.dimensions:
            report = out / f"{method}-{dimension}.json"
            if report.exists():
                continue  # same settings: check_out_folder said so
            call_command(
                "evaluate_steering", vector_set=vector_set.pk, dimension=dimension, limit=args.limit,
                max_new_tokens=args.tokens, output=str(report), split=args.split,
                strengths=",".join(str(s) for s in STRENGTHS), no_baselines=method != "caa" or args.no_baselines,
            )
            content = json.loads(report.read_text())
            content["table_settings"] = settings
            report.write_text(json.dumps(content, indent=2, ensure_ascii=False))


def _cells(figures: dict) -> str:
    def cell(column: str) -> str:
        value = figures.get(column)
        if value is None:
            return "—"
        if column.startswith("spearman"):
            return f"{value:.2f}"
        if column.startswith("ppl_ratio"):
            return f"{value:.2f}"
        return f"{value:+.3f}"

    return " | ".join(cell(c) for c in COLUMNS)


def table(out: Path) -> str:
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not reports:
        return "(no reports)"
    settings = reports[0].get("table_settings")
    for report in reports[1:]:
        diff = differences(settings or {}, report.get("table_settings"))
        if diff or settings is None:
            raise StaleResults(f"The reports under {out} were made with different settings: {'; '.join(diff)}")
    lines = [
        "Settings: " + json.dumps(settings, sort_keys=True),
        "",
        "| dimension | method | range | Effect −1 | Effect 0 | Effect +1 | ρ of means | ρ of answers "
        "| PNE +1 | PNE −1 | PPL× +1 | PPL× −1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["dimension"], r["method"]): r for r in reports}
    for dimension in sorted({r["dimension"] for r in reports}):
        for method in METHODS:
            report = by_key.get((dimension, method))
            if report is not None:
                lines.append(f"| {dimension} | {method} | {report['functional_range']:g} | {_cells(report['summary'])} |")
        caa = by_key.get((dimension, "caa"))
        for name in BASELINES:
            figures = (caa or {}).get("summary", {}).get("baselines", {}).get(name)
            if figures is not None:
                range_cell = "—" if name == "prompt" else f"{caa['functional_range']:g}"
                lines.append(f"| {dimension} | {name} | {range_cell} | {_cells(figures)} |")
    return "\n".join(lines)


def main() -> None:
    from steering.data import catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("evaluation"))
    parser.add_argument("--split", choices=["heldout", "shipped"], default="heldout")
    parser.add_argument("--limit", type=int, default=12, help="prompts per strength")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per answer")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--dimensions", default=",".join(catalog.dimension_names()))
    parser.add_argument("--no-baselines", action="store_true",
                        help="leave out the prompting rows (e.g. to compare dtypes on the steering alone)")
    parser.add_argument("--fresh", action="store_true", help="delete the reports and plots under --out first")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    args.methods = args.methods.split(",")
    args.dimensions = args.dimensions.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        import django

        django.setup()
        settings = table_settings(args)
        if args.fresh:
            for path in [*args.out.glob("*.json"), *args.out.glob("*.png")]:
                path.unlink()
        check_out_folder(args.out, settings)
        compute(args.out, args, settings)
    print(table(args.out))


if __name__ == "__main__":
    main()
