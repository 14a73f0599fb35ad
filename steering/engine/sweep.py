"""Strength sweeps: prompts × strengths decoded as the rows of one batch, then measured.

- `evaluate_dimension`: the paper's evaluation of one dimension. Answers at each strength
  are scored for Effect (against the dimension's reference texts), perplexity under the
  unsteered model, PNE against strength 0 and repetition; Spearman's ρ says whether Effect
  rises with strength.
  With `instructions` (strength → system prompt) it measures two more rows per strength on
  the same prompts: plain prompting (the system prompt, no steering) and the two combined,
  each with its own Spearman's ρ: the baseline steering must beat to be worth having.
- `search_functional_range`: per dimension, the largest range (in residual-norm units, see
  vectorfile) at which answers steered by ±range stay within `max_ppl_ratio` × the unsteered
  answers' perplexity. Every candidate of every dimension is one batch, so it costs about one
  generation of a few hundred short rows.

Rows are independent (per-row steering), so batching them changes nothing but the speed.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .embedding import SentenceEmbedder, shared_embedder
from .generation import stream_batch
from .request import GenerationParams, GenerationRequest
from .hooks import SteeringHooks
from .measures import answer_nll, effect_scores, perplexity, pne, repetition_rate, spearman
from .loading import LoadedModel
from .vectorfile import SteeringVectors

Progress = Callable[[int, int], None]

DEFAULT_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
EVALUATION_PARAMS = GenerationParams(max_new_tokens=48)

# The search is part of computing every vector set (and of `make setup`), so it is kept small:
# a few prompts, short greedy answers, one batch. On SmolLM2-135M the unsteered greedy answers
# have a perplexity of only about 1.8, and steering raises it fast and noisily (formality, two
# runs: ×1.4 or ×3.1 at 0.01, ×3.1 or ×8.6 at 0.02; cost: ×1.2 at 0.01, ×2.1 at 0.02, ×11 at
# 0.03). Below 0.01 the answers barely change (the admin preview's −1 answer equals the
# unsteered one at 0.005), so the grid starts there.
# The target is a perplexity ratio of at most 3 at ±1 on prompts the search never sees. With 3
# prompts the search's ratio at its chosen range was 0.7–1.3× the held-out one (ambiance: 2.82
# in the search at 0.03, 3.77 held out), so the search uses 6 prompts, a step at 0.025 and a
# limit of 2.5: the margin keeps the chosen range under 3 on new prompts.
RANGE_CANDIDATES = (0.01, 0.015, 0.02, 0.025, 0.03)
RANGE_PARAMS = GenerationParams(max_new_tokens=24)
RANGE_PROMPTS = 6
MAX_PPL_RATIO = 2.5


@contextmanager
def _hooks_on(loaded: LoadedModel, hooks: SteeringHooks | None, layers: Sequence[int]) -> Iterator[SteeringHooks]:
    """The caller's hooks, hooked on `layers` too; or hooks made for this sweep and removed after."""
    if hooks is not None:
        hooks.attach(layers)
        yield hooks
        return
    with SteeringHooks(loaded.layers, layers) as own:
        yield own


def generate_rows(
    loaded: LoadedModel,
    hooks: SteeringHooks,
    rows: Sequence[tuple[list[int], dict[int, torch.Tensor]]],
    params: GenerationParams,
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Each (prompt ids, layer deltas) row answered, all in one batch: the rows' texts in order.
    `progress(done, total)` counts tokens, a row that ends early counting as complete."""
    requests = [GenerationRequest(prompt_ids=ids, params=params, steering=steering) for ids, steering in rows]
    texts = [""] * len(requests)
    total, done = len(requests) * params.max_new_tokens, 0
    produced = [0] * len(requests)
    for event in stream_batch(loaded, hooks, requests):
        texts[event.index] += event.text
        before = produced[event.index]
        produced[event.index] = params.max_new_tokens if event.finish else before + (event.token_id is not None)
        done += produced[event.index] - before
        if progress:
            progress(done, total)
    return texts


@dataclass
class StrengthPoint:
    strength: float
    effect: float  # mean over prompts
    perplexity: float  # of all answers together, under the unsteered model
    ppl_ratio: float  # perplexity / the perplexity at strength 0
    pne: float
    repetition: float  # mean over prompts
    effects: list[float]
    answers: list[str]


@dataclass
class Baseline:
    """Another way to reach the same strengths: "prompt" (a system prompt per strength, no
    steering) or "prompt+steering" (that system prompt and the steering together). Measured
    against the same unsteered, unprompted answers at strength 0 as the steering itself."""

    name: str
    points: list[StrengthPoint]
    spearman: float
    spearman_of_means: float
    instructions: dict[str, str]  # strength (as text, JSON keys) → the system prompt

    def at(self, strength: float) -> StrengthPoint:
        for point in self.points:
            if math.isclose(point.strength, strength):
                return point
        raise KeyError(f"No strength {strength} in this baseline")


BASELINES = ("prompt", "prompt+steering")


@dataclass
class SweepResult:
    """One dimension swept over strengths × prompts: what `evaluate_dimension` measured (the
    ORM's `Evaluation` stores a report made from one)."""

    dimension: str
    method: str
    functional_range: float
    layers: list[int]
    prompts: list[str]
    params: dict
    points: list[StrengthPoint]
    spearman: float  # of Effect with strength, over every answer
    seconds: float = 0.0
    labels: list[str] = field(default_factory=list)
    baselines: dict[str, Baseline] = field(default_factory=dict)
    # Of the mean Effect at each strength with strength: 1.0 when every step up raises it.
    spearman_of_means: float = math.nan

    def at(self, strength: float) -> StrengthPoint:
        for point in self.points:
            if math.isclose(point.strength, strength):
                return point
        raise KeyError(f"No strength {strength} in this evaluation")

    def to_dict(self) -> dict:
        return asdict(self)


def _unit_range(vectors: SteeringVectors) -> SteeringVectors:
    """A copy whose strength s adds s × residual norm: strengths in residual-norm units."""
    return vectors.with_ranges(dict.fromkeys(vectors.dimensions, 1.0))


def evaluate_dimension(
    loaded: LoadedModel,
    vectors: SteeringVectors,
    dimension: str,
    prompts: Sequence[str],
    references: tuple[Sequence[str], Sequence[str]],
    *,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    hooks: SteeringHooks | None = None,
    embedder: SentenceEmbedder | None = None,
    params: GenerationParams = EVALUATION_PARAMS,
    instructions: Callable[[float], str | None] | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Answer every prompt at every strength (user units, −1…1 of the functional range) in one
    batch and measure the answers. `references` are the (positive, negative) reference texts.
    Strength 0 is always measured, since PNE compares with it. `instructions(strength)` (a
    system prompt, None at 0) adds the "prompt" and "prompt+steering" baselines.

    Perplexity is always taken given the plain prompt, without any system prompt: how
    surprising the answer is as an answer to the question, the same yardstick for all three."""
    if dimension not in vectors.vectors:
        raise KeyError(f"Unknown dimension {dimension!r}; these vectors have: {', '.join(vectors.dimensions)}")
    if not prompts:
        raise ValueError("No prompts to evaluate on")
    started = time.monotonic()
    strengths = sorted({float(s) for s in strengths} | {0.0})
    prompt_ids = [loaded.chat_ids(prompt) for prompt in prompts]
    # (kind, strength) → rows; strength 0 of every kind is the plain unsteered answer.
    kinds = ["steering", *(BASELINES if instructions else ())]
    texts = {s: instructions(s) for s in strengths if s} if instructions else {}
    keys, rows, plain_ids = [], [], []
    for kind in kinds:
        for s in strengths:
            if kind != "steering" and s == 0.0:
                continue
            steer = vectors.layer_deltas({dimension: s}) if kind != "prompt" else {}
            for prompt, ids in zip(prompts, prompt_ids):
                rows.append((loaded.chat_ids(prompt, system=texts[s]) if kind != "steering" else ids, steer))
                plain_ids.append(ids)
            keys.append((kind, s))
    generation_total = len(rows) * params.max_new_tokens
    total = generation_total + len(rows)  # the scoring counts one step a row

    def report(done: int, _: int) -> None:
        if progress:
            progress(done, total)

    with _hooks_on(loaded, hooks, vectors.layers) as active:
        answers = generate_rows(loaded, active, rows, params, progress=report)
    # Measured with no steering active: perplexity under the unsteered model.
    nlls = answer_nll(loaded, plain_ids, answers)
    effects = effect_scores(embedder or shared_embedder(), answers, *references)
    report(total, total)

    n = len(prompt_ids)
    measured = {
        key: (answers[i * n : (i + 1) * n], effects[i * n : (i + 1) * n], nlls[i * n : (i + 1) * n])
        for i, key in enumerate(keys)
    }
    base = measured[("steering", 0.0)]
    base_effect, base_ppl = sum(base[1]) / n, perplexity(base[2])

    def point(s: float, measures) -> StrengthPoint:
        answered, scores, nll = measures
        effect, ppl = sum(scores) / n, perplexity(nll)
        return StrengthPoint(
            strength=s,
            effect=effect,
            perplexity=ppl,
            ppl_ratio=ppl / base_ppl,
            pne=pne(effect, base_effect, ppl, base_ppl),
            repetition=sum(repetition_rate(t) for t in answered) / n,
            effects=scores,
            answers=answered,
        )

    def of(kind: str) -> list[StrengthPoint]:
        return [point(s, measured[(kind, s)] if (kind, s) in measured else base) for s in strengths]

    def rho(points: list[StrengthPoint]) -> float:
        return spearman([p.strength for p in points for _ in p.effects], [e for p in points for e in p.effects])

    def rho_of_means(points: list[StrengthPoint]) -> float:
        return spearman([p.strength for p in points], [p.effect for p in points])

    baselines = {}
    for kind in kinds[1:]:
        points = of(kind)
        baselines[kind] = Baseline(kind, points, rho(points), rho_of_means(points), {str(s): text for s, text in texts.items()})
    points = of("steering")
    return SweepResult(
        dimension=dimension,
        method=vectors.method,
        functional_range=vectors.functional_range[dimension],
        layers=list(vectors.layers),
        prompts=list(prompts),
        params=asdict(params),
        points=points,
        spearman=rho(points),
        seconds=round(time.monotonic() - started, 2),
        labels=list(vectors.labels.get(dimension, [])),
        baselines=baselines,
        spearman_of_means=rho_of_means(points),
    )


@dataclass
class RangeSearch:
    dimension: str
    functional_range: float
    baseline_perplexity: float
    # candidate → PPL of the worse of ±candidate over the unsteered PPL
    ratios: dict[float, float]
    # False when even the smallest candidate went past the limit (and was kept anyway)
    within_limit: bool = True


def functional_range_from(ratios: dict[float, float], max_ppl_ratio: float) -> tuple[float, bool]:
    """The largest candidate such that it and every smaller one stay within `max_ppl_ratio`.
    When even the smallest does not, the smallest, flagged: steering then stays usable at its
    gentlest measured setting rather than silently switching off."""
    candidates = sorted(ratios)
    best = None
    for candidate in candidates:
        if not ratios[candidate] <= max_ppl_ratio:  # NaN (no tokens) fails too
            break
        best = candidate
    return (candidates[0], False) if best is None else (best, True)


def search_functional_range(
    loaded: LoadedModel,
    vectors: SteeringVectors,
    prompts: Sequence[str],
    *,
    dimensions: Sequence[str] | None = None,
    candidates: Sequence[float] = RANGE_CANDIDATES,
    max_ppl_ratio: float = MAX_PPL_RATIO,
    hooks: SteeringHooks | None = None,
    params: GenerationParams = RANGE_PARAMS,
    progress: Progress | None = None,
) -> dict[str, RangeSearch]:
    """For each dimension, the functional range: see `functional_range_from`. Answers are
    greedy, at +candidate and −candidate (residual-norm units) for every candidate, and their
    perplexity is measured under the unsteered model, as is the unsteered answers'."""
    if not prompts or not candidates:
        raise ValueError("The search needs prompts and candidate ranges")
    if not max_ppl_ratio > 1:
        raise ValueError("max_ppl_ratio must be above 1")
    dimensions = list(dimensions or vectors.dimensions)
    unit = _unit_range(vectors)
    prompt_ids = [loaded.chat_ids(prompt) for prompt in prompts]
    keys: list[tuple[str | None, float]] = [(None, 0.0)]
    keys += [(dim, sign * c) for dim in dimensions for c in sorted(candidates) for sign in (1.0, -1.0)]
    rows = [(ids, unit.layer_deltas({dim: s}) if dim else {}) for dim, s in keys for ids in prompt_ids]
    generation_total = len(rows) * params.max_new_tokens

    def report(done: int, _: int) -> None:
        if progress:
            progress(done, generation_total + len(rows))

    with _hooks_on(loaded, hooks, vectors.layers) as active:
        answers = generate_rows(loaded, active, rows, params, progress=report)
    nlls = answer_nll(loaded, [ids for ids, _ in rows], answers)
    report(generation_total + len(rows), 0)
    n = len(prompt_ids)
    ppl = {key: perplexity(nlls[i * n : (i + 1) * n]) for i, key in enumerate(keys)}
    baseline = ppl[(None, 0.0)]
    results = {}
    for dim in dimensions:
        ratios = {c: max(ppl[(dim, c)], ppl[(dim, -c)]) / baseline for c in sorted(candidates)}
        chosen, within = functional_range_from(ratios, max_ppl_ratio)
        results[dim] = RangeSearch(dim, chosen, baseline, ratios, within)
    return results
