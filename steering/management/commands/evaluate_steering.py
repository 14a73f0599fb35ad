"""`evaluate_steering`: the seed CLI's verb. Sweeps strengths of one dimension of a vector set
over a prompt set on the site's model, with a progress bar, and writes a JSON report and a PNG
plot (Effect and perplexity against strength). The run is also kept as an Evaluation, shown
in the admin beside those started there."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from steering import files

from steering.data import catalog
from steering.models import Evaluation, VectorSet
from steering.services import evaluations

from .compute_vectors import read_examples


def read_prompts(path: str) -> list[str]:
    """A JSON list of prompts, or an object with a "prompts" (or "examples") list."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        content = None  # read_examples says what is wrong with the file
    if isinstance(content, dict) and "prompts" in content:
        return read_examples_list(content["prompts"], path)
    return read_examples(path, "prompts")


def read_examples_list(prompts, path: str) -> list[str]:
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts) or not prompts:
        raise CommandError(f"The prompts file {path} must hold a JSON list of non-empty texts")
    return [p.strip() for p in prompts]


def parse_strengths(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--strengths must be comma-separated numbers, not {text!r}") from exc
    if not values:
        raise CommandError("--strengths is empty")
    return values


class Command(BaseCommand):
    help = "Evaluate one dimension of a vector set: Effect, perplexity and PNE against strength."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--vector-set", type=int, required=True, help="vector set id (see the admin or /api/vector-sets/)")
        parser.add_argument("--dimension", required=True, help="a dimension of that vector set")
        parser.add_argument("--strengths", default="-1,-0.5,0,0.5,1", help="comma-separated strengths in -1…1")
        parser.add_argument(
            "--prompts", default=None,
            help="JSON list of prompts (or {\"prompts\": [...]}); default: the shipped neutral questions",
        )
        parser.add_argument(
            "--limit", type=int, default=Evaluation.DEFAULT_PROMPTS,
            help="use the first N prompts (default %(default)s)",
        )
        parser.add_argument("--max-new-tokens", type=int, default=Evaluation.DEFAULT_NEW_TOKENS)
        parser.add_argument(
            "--split", choices=["shipped", "heldout"], default="shipped",
            help="shipped: the neutral questions and the dimension's reference texts; heldout: the held-out "
                 "prompts and reference texts (steering/data/heldout.json), which extraction never sees",
        )
        parser.add_argument(
            "--no-baselines", action="store_true",
            help="leave out the plain-prompting and prompting + steering rows",
        )
        parser.add_argument(
            "--output", default=None,
            help="the JSON report (default: evaluation-<set>-<dimension>.json); the plot goes beside it as .png",
        )

    def handle(self, *args, **opts) -> None:
        try:
            vector_set = VectorSet.objects.get(pk=opts["vector_set"])
        except VectorSet.DoesNotExist:
            raise CommandError(f"There is no vector set {opts['vector_set']}") from None
        if opts["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        references = None
        if opts["split"] == "heldout":
            try:
                references = catalog.heldout_references(opts["dimension"])
            except KeyError:
                raise CommandError(f"The held-out split has no reference texts for {opts['dimension']!r}") from None
            split = catalog.heldout()
            # The suggestion prompts, then this dimension's on-topic ones (--limit counts both).
            default_prompts = split["prompts"] + split.get("on_topic", {}).get(opts["dimension"], [])
        else:
            default_prompts = catalog.neutral_prompts()
        prompts = read_prompts(opts["prompts"]) if opts["prompts"] else default_prompts
        try:
            run = evaluations.evaluation_start(
                vector_set=vector_set,
                dimension=opts["dimension"],
                strengths=parse_strengths(opts["strengths"]),
                prompts=prompts[: opts["limit"]],
                max_new_tokens=opts["max_new_tokens"],
                enqueue=False,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        rows = len(run.prompts) * len({*run.strengths, 0.0})
        if not opts["no_baselines"]:
            rows += 2 * len(run.prompts) * len(set(run.strengths) - {0.0})
        self.stdout.write(f"Evaluating {opts['dimension']} of “{vector_set.name}”: {rows} answers in one batch…")
        with tqdm(total=100, desc="evaluating", unit="%", file=self.stdout) as bar:
            run = evaluations.evaluation_run(
                evaluation=run, report=lambda percent: bar.update(percent - bar.n),
                references=references, baselines=not opts["no_baselines"],
            )
            if run.status == Evaluation.Status.READY:
                bar.update(100 - bar.n)
        if run.status != Evaluation.Status.READY:
            raise CommandError(f"The evaluation failed: {run.error}")
        output = Path(opts["output"] or f"evaluation-{vector_set.pk}-{run.dimension}.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(run.report, indent=2, ensure_ascii=False))
        plot = output.with_suffix(".png")
        files.copy_out(run.plot, plot)
        summary = run.report["summary"]
        line = (
            "{name}: Effect at −1 / 0 / +1: {effect_minus_1} / {effect_0} / {effect_plus_1};  Spearman ρ {spearman} "
            "(of the means {spearman_of_means});  PNE at +1 {pne_plus_1}, at −1 {pne_minus_1};  "
            "PPL ratio at +1 {ppl_ratio_plus_1}, at −1 {ppl_ratio_minus_1};  "
            "relevance at +1 {relevance_plus_1} (90 % interval {relevance_plus_1_interval}), "
            "at −1 {relevance_minus_1} (90 % interval {relevance_minus_1_interval});  "
            "degenerate answers at +1 {degenerate_plus_1}, at −1 {degenerate_minus_1};  "
            "composite at +1 {composite_plus_1}, at −1 {composite_minus_1}"
        )
        self.stdout.write(line.format(name="steering", **summary))
        for name, figures in summary["baselines"].items():
            self.stdout.write(line.format(name=name, **figures))
        self.stdout.write(self.style.SUCCESS(f"Wrote {output} and {plot} (evaluation #{run.pk})"))
