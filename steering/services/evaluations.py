"""The paper's evaluation, for the platform: the engine's sweep (steering/engine/sweep.py) fed
from the database, its results stored. `evaluation_start` / `evaluation_run`: an Evaluation row
computed in the background (the admin) or in the foreground (`manage.py evaluate_steering`):
a JSON report and a PNG plot."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Callable, Sequence

from django.conf import settings
from django.db import transaction

from steering.data import catalog
from steering.engine import GenerationParams, served_greedy
from steering.engine.embedding import shared_embedder
from steering.engine.vectorfile import range_text
from steering.engine.prompting import preference_instruction
from steering.engine.sweep import SweepResult
from steering.engine.sweep import evaluate_dimension
from steering.models import Evaluation, VectorSet
from steering.services import jobs
from steering.serving import runtime


def evaluation_start(
    *,
    vector_set: VectorSet,
    dimension: str,
    strengths: Sequence[float],
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = Evaluation.DEFAULT_NEW_TOKENS,
    created_by=None,
    enqueue: bool = True,
) -> Evaluation:
    """Create an evaluation of one dimension of a ready vector set and, with `enqueue`, queue it
    in the django-q2 cluster after commit. Raises ValueError for anything that cannot run."""
    if not vector_set.is_ready:
        raise ValueError(f"Vector set {vector_set.pk} is not ready ({vector_set.status})")
    if dimension not in vector_set.dimension_names():
        raise ValueError(f"Vector set {vector_set.pk} has no dimension {dimension!r}")
    strengths = sorted({float(s) for s in strengths})
    if not strengths or not all(math.isfinite(s) and -1 <= s <= 1 for s in strengths):
        raise ValueError("Strengths must be numbers between -1 and 1")
    prompts = list(prompts) if prompts else catalog.neutral_prompts()[:Evaluation.DEFAULT_PROMPTS]
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("Prompts must be non-empty texts")
    GenerationParams(max_new_tokens=max_new_tokens)  # bounds checked here, with a message
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            vector_set=vector_set,
            dimension=dimension,
            strengths=strengths,
            prompts=prompts,
            max_new_tokens=max_new_tokens,
            created_by=created_by,
        )
        if enqueue:
            jobs.enqueue("run_evaluation", evaluation.pk, name="evaluation")
    return evaluation


def evaluation_run(
    *,
    evaluation: Evaluation,
    report: Callable[[int], None] | None = None,
    references: tuple[list[str], list[str]] | None = None,
    baselines: bool = True,
) -> Evaluation:
    """Run `evaluation` on the site's model with its vector set's vectors; store the report and
    the plot and mark it ready. Any failure marks it failed with the error and stores nothing.
    `references` (positive, negative) replace the dimension's own reference texts (the held-out
    split of `evaluate_steering --split heldout`); the report keeps the ones used. Without
    `baselines`, the plain-prompting rows are left out (a third of the work)."""

    def work(job: jobs.Job) -> dict:
        used = references or _references(evaluation.vector_set, evaluation.dimension)
        words = served_words(evaluation.vector_set, evaluation.dimension)
        result = evaluate_dimension(
            runtime.site_model(),
            runtime.site_vectors(evaluation.vector_set),
            evaluation.dimension,
            evaluation.prompts,
            used,
            strengths=evaluation.strengths,
            hooks=runtime.site_hooks(),
            embedder=shared_embedder(settings.STEERLAB_EMBEDDER),
            params=served_greedy(evaluation.max_new_tokens),
            instructions=instructions_for(evaluation.vector_set, evaluation.dimension) if baselines else None,
            words=words,
            progress=job.progress,
        )
        return {
            "report": {
                **report_of(result, vector_set=evaluation.vector_set),
                "references": {"positive": list(used[0]), "negative": list(used[1])},
                # The steering rows were told the preference in words too, as the set serves them.
                "worded": words is not None,
            },
            "plot": job.store(
                f"evaluations/{evaluation.pk}-{uuid.uuid4().hex[:8]}.png", lambda path: plot_evaluation(result, path)
            ),
        }

    return jobs.run(evaluation, work, file_field="plot", report=report)


def _references(vector_set, name: str) -> tuple[list[str], list[str]]:
    """A dimension's reference texts as the database holds them (edited in the admin)."""
    dimension = vector_set.dimensions.get(name=name)
    if not dimension.reference_positive or not dimension.reference_negative:
        raise ValueError(f"Dimension {name!r} needs reference texts for both ends to measure Effect")
    return dimension.reference_positive, dimension.reference_negative


def instructions_for(vector_set, name: str) -> Callable[[float], str | None]:
    """The plain-prompting baseline's system prompt for each strength of dimension `name` of
    `vector_set`, in its words (PreferenceDimension.words: the shipped dimension's, "expensive,
    luxurious options", or its labels)."""
    positive, negative = vector_set.dimensions.get(name=name).words()
    return lambda strength: preference_instruction(positive, negative, strength)


def served_words(vector_set, name: str) -> Callable[[float], str | None] | None:
    """The words the set says with dimension `name`'s steering, where it applies (its worded
    dimensions, or every one with "prompt with steering"): the evaluation measures them so."""
    worded = vector_set.prompt_with_steering or name in vector_set.worded_dimensions
    return instructions_for(vector_set, name) if worded else None


def _rounded(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _figures(points, spearman: float, spearman_of_means: float) -> dict:
    """Effect at −1, 0, +1, Spearman's ρ (over every answer, and over the means per strength),
    PNE and the perplexity ratio at ±1, of one way of steering (None where not measured)."""
    by_strength = {p.strength: p for p in points}

    def at(strength: float, name: str):
        point = by_strength.get(strength)
        return None if point is None else _rounded(getattr(point, name))

    def interval(strength: float):
        point = by_strength.get(strength)
        return None if point is None else [_rounded(x) for x in point.relevance_interval]

    return {
        "effect_minus_1": at(-1.0, "effect"),
        "effect_0": at(0.0, "effect"),
        "effect_plus_1": at(1.0, "effect"),
        "spearman": _rounded(spearman, 3),
        "spearman_of_means": _rounded(spearman_of_means, 3),
        "pne_plus_1": at(1.0, "pne"),
        "pne_minus_1": at(-1.0, "pne"),
        "ppl_ratio_plus_1": at(1.0, "ppl_ratio"),
        "ppl_ratio_minus_1": at(-1.0, "ppl_ratio"),
        "relevance_plus_1": at(1.0, "relevance"),
        "relevance_minus_1": at(-1.0, "relevance"),
        "relevance_plus_1_interval": interval(1.0),
        "relevance_minus_1_interval": interval(-1.0),
        "degenerate_plus_1": at(1.0, "degenerate"),
        "degenerate_minus_1": at(-1.0, "degenerate"),
        "composite_plus_1": at(1.0, "composite"),
        "composite_minus_1": at(-1.0, "composite"),
    }


def summary_of(result: SweepResult) -> dict:
    """The figures of the README's table for the steering, and the same figures of each
    baseline ("prompt", "prompt+steering") under "baselines"."""
    return {
        **_figures(result.points, result.spearman, result.spearman_of_means),
        "baselines": {
            name: _figures(baseline.points, baseline.spearman, baseline.spearman_of_means)
            for name, baseline in result.baselines.items()
        },
    }


def report_of(result: SweepResult, *, vector_set: VectorSet | None = None) -> dict:
    """The JSON report: what was measured, the summary, and every point with its answers."""
    report = {
        "vector_set": {"id": vector_set.pk, "name": vector_set.name} if vector_set else None,
        "summary": summary_of(result),
        **result.to_dict(),
    }
    # JSON has no NaN: a strength whose answers were all empty has no perplexity.
    for part in (report, *report["baselines"].values()):
        for point in part["points"]:
            for key in ("effect", "perplexity", "ppl_ratio", "pne", "repetition", "relevance", "degenerate", "composite"):
                point[key] = _rounded(point[key], 6)
            point["cosines"] = [_rounded(x, 6) for x in point["cosines"]]
            point["relevance_interval"] = [_rounded(x, 6) for x in point["relevance_interval"]]
        for key in ("spearman", "spearman_of_means"):
            part[key] = _rounded(part[key], 6)
    return report


def plot_evaluation(result: SweepResult, path: Path) -> Path:
    """A PNG of Effect (mean, and each answer), perplexity and relevance against strength."""
    import matplotlib

    matplotlib.use("Agg")  # no display: servers, workers and CI
    from matplotlib import pyplot as plt

    strengths = [p.strength for p in result.points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for point in result.points:
        left.scatter([point.strength] * len(point.effects), point.effects, s=8, alpha=0.35, color="tab:blue")
    left.plot(strengths, [p.effect for p in result.points], marker="o", color="tab:blue")
    left.axhline(0, color="grey", linewidth=0.6)
    low, high = (result.labels + ["−", "+"])[:2] if len(result.labels) >= 2 else ("−", "+")
    left.set(xlabel=f"strength ({low} ← → {high})", ylabel="Effect", title=f"{result.dimension}: Effect, ρ = {result.spearman:.2f}")
    right.plot(strengths, [p.perplexity for p in result.points], marker="o", color="tab:red")
    right.set(xlabel="strength", ylabel="perplexity (unsteered model)", title=f"{result.method}, range {range_text(result.functional_range, result.negative_range)}")
    # Relevance on its own axis: does the answer still answer (1 = as unsteered; 0.9 the bar)?
    kept = right.twinx()
    kept.plot(strengths, [p.relevance for p in result.points], marker="s", color="tab:green")
    kept.axhline(0.9, color="tab:green", linewidth=0.6, linestyle=":")
    kept.set(ylabel="relevance (green)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
