"""What computing a vector set measures on the model beyond its vectors: each dimension's
functional range (and what the search tried, for the set's plots), the topical dimensions'
conditions, and the dimensions also said in words where they apply."""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping, Sequence

from django.conf import settings

from steering.data import catalog
from steering.engine import LoadedModel, SteeringHooks, SteeringVectors
from steering.engine.condition_reading import compute_conditions
from steering.engine.range_search import choose_worded, measured_ranges, search_functional_range, search_joint_range
from steering.models import PreferenceDimension

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def functional_range_measure(
    *, vectors: SteeringVectors, loaded: LoadedModel, hooks: SteeringHooks | None = None, progress: Progress | None = None,
    searched: dict | None = None, words_for: Callable[[SteeringVectors], Mapping[str, tuple[str, str]]] | None = None,
) -> SteeringVectors:
    """`vectors` with each dimension's functional range measured on the model (a few neutral
    prompts, short greedy answers, one batch): the largest strength whose answers still answer
    (relevance ≥ STEERLAB_RANGE_MIN_RELEVANCE of the unsteered answers', perplexity within
    STEERLAB_RANGE_PPL_FACTOR × theirs, none made degenerate), each end its own with
    STEERLAB_RANGE_PER_SIDE; then, with several dimensions,
    the budget of their summed addition by the same bar. Unchanged with STEERLAB_RANGE_SEARCH off.
    `searched` receives what was tried, per dimension (VectorSet.range_search), for its plots.
    `words_for(ranged)`, called once the ranges are found, gives the dimensions said in words
    where they apply ({dimension: (positive end, negative end)}); the budget is searched with
    them said, as they are served (docs/evaluation.md, "A budget that leaves one dimension
    alone")."""
    if not settings.STEERLAB_RANGE_SEARCH:
        return vectors
    prompts = catalog.range_prompts(settings.STEERLAB_RANGE_PROMPTS)
    bar = {"max_ppl_ratio": settings.STEERLAB_RANGE_PPL_FACTOR, "min_relevance": settings.STEERLAB_RANGE_MIN_RELEVANCE}
    single = (lambda done, total: progress(done, 2 * total)) if progress and len(vectors.dimensions) > 1 else progress
    results = search_functional_range(loaded, vectors, prompts, **bar, hooks=hooks, progress=single,
                                      per_side=settings.STEERLAB_RANGE_PER_SIDE)
    for dim, result in results.items():
        log.info(
            "Functional range of %s: %s%s (PPL ratios %s, relevance %s)%s", dim, result.functional_range,
            "" if result.negative_range is None else f", towards the negative end {result.negative_range}",
            {c: round(r, 2) for c, r in result.ratios.items()}, {c: round(r, 2) for c, r in result.relevances.items()},
            "" if result.within_limit else ", none within the limit",
        )
    if searched is not None:
        searched.update({dim: range_search_of(result) for dim, result in results.items()})
    vectors = vectors.with_ranges(*measured_ranges(results))
    words = words_for(vectors) if words_for else None
    if len(vectors.dimensions) < 2:
        return vectors
    joint = search_joint_range(
        loaded, vectors, prompts, **bar, hooks=hooks, words=words,
        progress=(lambda done, total: progress(total + done, 2 * total)) if progress else None,
    )
    log.info("Joint range: %s (worst PPL ratio, relevance, made degenerate per cap: %s)", joint.joint_range, joint.measured)
    return vectors.with_joint_range(joint.joint_range)


def finite(value: float | None) -> float | None:
    """`value` as JSON holds it: NaN, which JSON lacks, as None."""
    return value if value is not None and math.isfinite(value) else None


def range_search_of(result) -> dict:
    """One dimension's range search as JSON: each candidate with the worse of ±candidate's
    perplexity ratio and relevance, and each side's where the sides got their own ranges
    ("sides": {"+"/"−": {"ppl_ratio", "relevance"}}); NaN, which JSON lacks, as None."""
    candidates = sorted(result.ratios)
    found = {
        "candidates": candidates,
        "ppl_ratio": [finite(result.ratios[c]) for c in candidates],
        "relevance": [finite(result.relevances.get(c)) for c in candidates],
    }
    if result.negative_range is not None:
        found["sides"] = {side: {"ppl_ratio": [finite(measured[c][0]) for c in candidates],
                                 "relevance": [finite(measured[c][1]) for c in candidates]}
                          for side, measured in result.sides.items()}
    return found


def dimension_condition_prompts(dimension: PreferenceDimension) -> list[str]:
    """The on-topic questions a dimension's condition is fitted from: its own, else the shipped
    ones of a default dimension, else none (then it has no condition and always applies)."""
    if dimension.condition_prompts:
        return list(dimension.condition_prompts)
    shipped, _ = catalog.condition_prompts()
    return list(shipped.get(dimension.name, [])) if dimension.private_to_id is None else []


def conditions_compute(
    *, vectors: SteeringVectors, loaded: LoadedModel, dimensions: Sequence[PreferenceDimension]
) -> SteeringVectors:
    """`vectors` with a condition for every dimension that has on-topic questions (whatever its
    kind today: staff may make it topical later without recomputing), fitted against the
    shipped everyday questions."""
    on_topic = {dim.name: prompts for dim in dimensions if (prompts := dimension_condition_prompts(dim))}
    if not on_topic:
        return vectors
    conditions, report = compute_conditions(loaded, on_topic, catalog.condition_prompts()[1])
    log.info("Conditions at layer %d, held-out balanced accuracy %s", report.layer, report.accuracy)
    return vectors.with_conditions(
        conditions, {"layer": report.layer, "accuracy": report.accuracy, "separation": report.separation}
    )


def worded_choose(
    *, vectors: SteeringVectors, loaded: LoadedModel, dimensions: Sequence[PreferenceDimension],
    hooks: SteeringHooks | None = None, searched: dict | None = None,
) -> list[str]:
    """The dimensions whose preference is also said in words where they apply
    (VectorSet.worded_dimensions): those whose answers at ±1, with words and steering within
    their measured ranges, keep the range search's bar on its neutral prompts and, for a topical
    dimension, on the shipped open suggestion requests too, the kind of turn its words are said
    on (range_search.choose_worded). None with STEERLAB_WORD_PREFERENCES or the range search off:
    the bar is the search's. `searched` (VectorSet.range_search) receives each dimension's figures
    with words, per end ("words": {"−"/"+": {"ppl_ratio", "relevance", "made_degenerate"}})."""
    if not (settings.STEERLAB_WORD_PREFERENCES and settings.STEERLAB_RANGE_SEARCH):
        return []
    choice = choose_worded(
        loaded, vectors, catalog.range_prompts(settings.STEERLAB_RANGE_PROMPTS),
        {dim.name: dim.words() for dim in dimensions}, hooks=hooks,
        also_on={dim.name: catalog.suggestion_prompts() for dim in dimensions if dim.kind == dim.Kind.TOPICAL},
        max_ppl_ratio=settings.STEERLAB_RANGE_PPL_FACTOR, min_relevance=settings.STEERLAB_RANGE_MIN_RELEVANCE,
    )
    log.info("Worded: %s (perplexity ratio, relevance, made degenerate at ±1 with words: %s)", choice.worded,
             choice.measured)
    if searched is not None:
        for dim, sides in choice.measured.items():
            searched.setdefault(dim, {})["words"] = {
                side: {"ppl_ratio": finite(ratio), "relevance": finite(kept), "made_degenerate": made}
                for side, (ratio, kept, made) in sides.items()
            }
    return choice.worded
