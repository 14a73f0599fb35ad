"""Strength sweeps: the paper's evaluation of one dimension, prompts × strengths decoded as the
rows of one batch (rows.py), then measured.

`evaluate_dimension`: answers at each strength are scored for Effect (against the dimension's
reference texts), perplexity under the unsteered model, PNE against strength 0 and repetition;
Spearman's ρ says whether Effect rises with strength.
With `instructions` (strength → system prompt) it measures two more rows per strength on the
same prompts: plain prompting (the system prompt, no steering) and the two combined, each with
its own Spearman's ρ: the baseline steering must beat to be worth having.

The functional range that strength ±1 maps onto is searched in range_search.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from .embedding import SentenceEmbedder, shared_embedder
from .hooks import SteeringHooks
from .measures import (
    answer_nll,
    bootstrap_interval,
    composite,
    degenerate_rate,
    effect_scores,
    perplexity,
    pne,
    prompt_similarities,
    relevance,
    repetition_rate,
    spearman,
)
from .loading import LoadedModel
from .request import GenerationParams, served_greedy
from .rows import Progress, generate_rows, hooks_on
from .vectorfile import SteeringVectors

DEFAULT_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
EVALUATION_PARAMS = served_greedy(48)


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
    # Does the answer still answer? Mean cosine to the prompt over the unsteered answers' (1 at 0).
    relevance: float = math.nan
    degenerate: float = 0.0  # share of the answers that are degenerate (measures.is_degenerate)
    composite: float = math.nan  # measures.composite; NaN at strength 0
    cosines: list[float] = field(default_factory=list)  # each answer's cosine to its prompt (relevance's parts)
    # The 90 % bootstrap interval of `relevance` over the prompts (measures.bootstrap_interval): a
    # dozen answers read it to about ±0.15, so a figure near the bar says little on its own.
    relevance_interval: tuple[float, float] = (math.nan, math.nan)


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
    # The range towards the negative end where it differs (functional_range is then the positive end's).
    negative_range: float | None = None

    def at(self, strength: float) -> StrengthPoint:
        for point in self.points:
            if math.isclose(point.strength, strength):
                return point
        raise KeyError(f"No strength {strength} in this evaluation")

    def to_dict(self) -> dict:
        return asdict(self)


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
    words: Callable[[float], str | None] | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Answer every prompt at every strength (user units, −1…1 of the functional range) in one
    batch and measure the answers. `references` are the (positive, negative) reference texts.
    Strength 0 is always measured, since PNE compares with it. `instructions(strength)` (a
    system prompt, None at 0) adds the "prompt" and "prompt+steering" baselines. `words(strength)`
    is the steering's own system prompt, for a dimension the set also says in words where it
    applies (prompting.WordedPrompt): the steering is then measured as it is served.

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
                system = texts[s] if kind != "steering" else words(s) if words and s else None
                rows.append((loaded.chat_ids(prompt, system=system) if system else ids, steer))
                plain_ids.append(ids)
            keys.append((kind, s))
    generation_total = len(rows) * params.max_new_tokens
    total = generation_total + len(rows)  # the scoring counts one step a row

    def report(done: int, _: int) -> None:
        if progress:
            progress(done, total)

    with hooks_on(loaded, hooks, vectors.layers) as active:
        answers = generate_rows(loaded, active, rows, params, progress=report, steer_prompt=vectors.steer_prompt)
    # Measured with no steering active: perplexity under the unsteered model.
    nlls = answer_nll(loaded, plain_ids, answers)
    embedder = embedder or shared_embedder()
    effects = effect_scores(embedder, answers, *references)
    cosines = prompt_similarities(embedder, [p for _ in keys for p in prompts], answers)
    report(total, total)

    n = len(prompt_ids)
    measured = {
        key: tuple(x[i * n : (i + 1) * n] for x in (answers, effects, nlls, cosines)) for i, key in enumerate(keys)
    }
    base = measured[("steering", 0.0)]
    base_effect, base_ppl = sum(base[1]) / n, perplexity(base[2])

    def point(s: float, measures) -> StrengthPoint:
        answered, scores, nll, cosine = measures
        effect, ppl = sum(scores) / n, perplexity(nll)
        kept, degenerate = relevance(cosine, base[3]), degenerate_rate(answered)
        return StrengthPoint(
            strength=s,
            effect=effect,
            perplexity=ppl,
            ppl_ratio=ppl / base_ppl,
            pne=pne(effect, base_effect, ppl, base_ppl),
            repetition=sum(repetition_rate(t) for t in answered) / n,
            effects=scores,
            answers=answered,
            relevance=kept,
            degenerate=degenerate,
            composite=composite(strength=s, effect=effect, effect_0=base_effect, relevance=kept,
                                ppl_ratio=ppl / base_ppl, degenerate=degenerate),
            cosines=list(cosine),
            # The unsteered answers are their own yardstick: 1 at every draw, nothing to resample.
            relevance_interval=(kept, kept) if measures is base else bootstrap_interval(
                lambda idx: relevance([cosine[i] for i in idx], [base[3][i] for i in idx]), n),
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
        negative_range=vectors.negative_range.get(dimension),
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
