"""The functional range: how far steering may go before the answers stop answering.

- `search_functional_range`: per dimension, the largest range (in residual-norm units, see
  vectorfile) at which answers steered by ±range still answer: relevance ≥ `min_relevance` of
  the unsteered answers', perplexity within `max_ppl_ratio` × theirs, none made degenerate.
  Every candidate of every dimension is one batch, so it costs about one generation of a few
  hundred short rows.
- `search_joint_range`: the same bar for every dimension at ±1 together, over caps on the summed
  addition (`SteeringVectors.joint_range`).
- `choose_worded`: the dimensions whose preference may also be said in words where they apply
  (prompting.WordedPrompt): those whose answers keep the same bar at ±1 with words and steering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from .embedding import SentenceEmbedder, shared_embedder
from .hooks import SteeringHooks
from .loading import LoadedModel
from .prompting import preference_instruction, preferences_instruction
from .measures import answer_nll, is_degenerate, perplexity, prompt_similarities, relevance
from .request import GenerationParams, served_greedy
from .rows import Progress, generate_rows, hooks_on, unit_range
from .vectorfile import SteeringVectors

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
# Issue 24: that bar kept answers fluent but not answering (relevance to the question fell to
# 0.33–0.83 of the unsteered answers' at ±1), so ±1 is now the strongest steering at which the
# answers still answer: relevance ≥ MIN_RELEVANCE of the unsteered answers', perplexity ≤
# MAX_PPL_RATIO × theirs, and no answer made degenerate (measures.is_degenerate); the grid goes
# down to 0.005 since the bar stops earlier.
# 2026-12-06: with 6 prompts × 24 tokens the relevance of one candidate varied by ±0.1 (age
# 0.88 at 0.005, 0.93 at 0.01), so ranges fell to the floor while the held-out answers kept
# relevance 0.93–1.18 at them (docs/evaluation.md): 12 prompts, read through monotone fits.
RANGE_CANDIDATES = (0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025)
RANGE_PARAMS = served_greedy(24)
RANGE_PROMPTS = 12
MAX_PPL_RATIO = 2.0
MIN_RELEVANCE = 0.9
# Caps on the summed addition of several dimensions (residual-norm units), for search_joint_range.
JOINT_CANDIDATES = (0.01, 0.015, 0.02, 0.025, 0.03, 0.04)


@dataclass
class RangeSearch:
    dimension: str
    functional_range: float
    baseline_perplexity: float
    # candidate → PPL of the worse of ±candidate over the unsteered PPL
    ratios: dict[float, float]
    # False when even the smallest candidate failed the bar (and was kept anyway)
    within_limit: bool = True
    # candidate → relevance of the worse of ±candidate (measures.relevance)
    relevances: dict[float, float] = field(default_factory=dict)
    # candidate → answers at ±candidate that are degenerate where the unsteered one is not
    degenerate: dict[float, int] = field(default_factory=dict)
    # The negative side's range where each side was searched on its own (`per_side`); then
    # `functional_range` is the positive side's. None: one range for both sides.
    negative_range: float | None = None
    # "+" / "−" → candidate → (perplexity ratio, relevance, answers made degenerate) of that side
    sides: dict[str, dict[float, tuple[float, float, int]]] = field(default_factory=dict)


def measured_ranges(results: Mapping[str, RangeSearch]) -> tuple[dict[str, float], dict[str, float]]:
    """(the ranges, the negative sides' where searched apart) of a search, for
    `SteeringVectors.with_ranges`."""
    return ({dim: r.functional_range for dim, r in results.items()},
            {dim: r.negative_range for dim, r in results.items() if r.negative_range is not None})


def functional_range_from(
    ratios: dict[float, float],
    max_ppl_ratio: float,
    *,
    relevances: dict[float, float] | None = None,
    min_relevance: float = 0.0,
    degenerate: dict[float, int] | None = None,
) -> tuple[float, bool]:
    """The largest candidate that keeps the answer: perplexity within `max_ppl_ratio` ×
    unsteered, relevance at least `min_relevance`, and no answer made degenerate there or at
    any smaller candidate.

    Perplexity and relevance are read off monotone fits over the candidates (`monotone`), not
    candidate by candidate: stronger steering cannot, in expectation, make answers more on topic
    or more likely, and a few prompts' greedy answers are noisy (one changed token changes the
    rest of the answer). Read one by one, the noise both pinned ranges to the floor (formality on
    SmolLM2: relevance 0.85 at 0.005, 0.95 at 0.0075, 1.0 at 0.01) and let a lucky larger
    candidate through; the fit pools such points with their neighbours. An empty (NaN) or
    degenerate answer is no noise: it ends the search. When no candidate passes, the smallest,
    flagged: steering then stays usable at its gentlest measured setting rather than silently
    switching off."""
    candidates = sorted(ratios)
    kept = [(relevances or {}).get(c, 1.0) for c in candidates]
    ppl = [ratios[c] for c in candidates]
    usable = 0  # candidates before the first unmeasurable or broken one
    for c, r, k in zip(candidates, ppl, kept):
        if math.isnan(r) or math.isnan(k) or (degenerate or {}).get(c, 0) > 0:
            break
        usable += 1
    ppl_fit = monotone(ppl[:usable], increasing=True)
    kept_fit = monotone(kept[:usable], increasing=False)
    best = None
    for c, r, k in zip(candidates, ppl_fit, kept_fit):
        if r > max_ppl_ratio or k < min_relevance:
            break  # both fits are monotone: no larger candidate passes either
        best = c
    return (candidates[0], False) if best is None else (best, True)


def monotone(values: Sequence[float], *, increasing: bool) -> list[float]:
    """The least-squares monotone fit of `values` (pool adjacent violators): each run of
    points that goes the wrong way is replaced by its mean."""
    sign = 1.0 if increasing else -1.0
    blocks: list[list[float]] = []  # [mean × sign, count]
    for value in values:
        blocks.append([sign * value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count), blocks[-1][1] + count]
    return [sign * mean for mean, count in blocks for _ in range(count)]


@dataclass
class _Bar:
    """The unsteered answers of a search, to measure steered ones against."""

    prompts: list[str]
    perplexity: float
    cosines: list[float]
    degenerate: list[bool]

    def judge(self, answers: Sequence[str], nlls, cosines: Sequence[float]) -> tuple[float, float, int]:
        """(perplexity ratio, relevance, answers made degenerate) of one steered setting."""
        made = sum(is_degenerate(text) and not was for text, was in zip(answers, self.degenerate))
        return perplexity(nlls) / self.perplexity, relevance(cosines, self.cosines), made


def _answer_settings(
    loaded: LoadedModel,
    hooks: SteeringHooks | None,
    layers: Sequence[int],
    prompts: Sequence[str],
    settings: Sequence[dict[int, torch.Tensor]],
    params: GenerationParams,
    embedder: SentenceEmbedder | None,
    progress: Progress | None,
    steer_prompt: bool = True,
    systems: Sequence[str | None] | None = None,
) -> tuple[_Bar, list[tuple[float, float, int]]]:
    """Every prompt answered unsteered and under each setting (layer deltas, and with
    `systems` each setting's own system prompt), in one batch; each setting judged against the
    unsteered answers, its perplexity taken given the plain prompt (the question as asked)."""
    prompt_ids = [loaded.chat_ids(prompt) for prompt in prompts]
    asked = [prompt_ids, *([loaded.chat_ids(prompt, system=system) for prompt in prompts] if system else prompt_ids
                           for system in (systems or [None] * len(settings)))]
    rows = [(ids, steer) for steer, ids_of in zip([{}, *settings], asked) for ids in ids_of]
    generation_total = len(rows) * params.max_new_tokens

    def report(done: int, _: int) -> None:
        if progress:
            progress(done, generation_total + len(rows))

    with hooks_on(loaded, hooks, layers) as active:
        answers = generate_rows(loaded, active, rows, params, progress=report, steer_prompt=steer_prompt)
    nlls = answer_nll(loaded, prompt_ids * (len(settings) + 1), answers)
    cosines = prompt_similarities(embedder or shared_embedder(), [p for _ in range(len(settings) + 1) for p in prompts], answers)
    report(generation_total + len(rows), 0)
    n = len(prompts)
    bar = _Bar(list(prompts), perplexity(nlls[:n]), cosines[:n], [is_degenerate(t) for t in answers[:n]])
    judged = [bar.judge(answers[i * n : (i + 1) * n], nlls[i * n : (i + 1) * n], cosines[i * n : (i + 1) * n])
              for i in range(1, len(settings) + 1)]
    return bar, judged


def search_functional_range(
    loaded: LoadedModel,
    vectors: SteeringVectors,
    prompts: Sequence[str],
    *,
    prompts_for: Mapping[str, Sequence[str]] | None = None,
    dimensions: Sequence[str] | None = None,
    candidates: Sequence[float] = RANGE_CANDIDATES,
    max_ppl_ratio: float = MAX_PPL_RATIO,
    min_relevance: float = MIN_RELEVANCE,
    hooks: SteeringHooks | None = None,
    params: GenerationParams = RANGE_PARAMS,
    embedder: SentenceEmbedder | None = None,
    progress: Progress | None = None,
    per_side: bool = False,
) -> dict[str, RangeSearch]:
    """For each dimension, the functional range: see `functional_range_from`. Answers are
    greedy, at +candidate and −candidate (residual-norm units) for every candidate; their
    perplexity is measured under the unsteered model and their relevance and degeneracy
    against the unsteered answers'.

    A dimension in `prompts_for` is searched on its own prompts (as many as `prompts`), the
    rest on `prompts`: e.g. a topical dimension on questions about its subject, where it
    steers (`bench/heldout.py --search-on topic`). Measured on the held-out split (2026-12-06,
    docs/evaluation.md, fourth pass), that found culture and cost leaving the question sooner
    and let age go further than the held-out answers bear; the site searches every dimension on
    the neutral prompts.

    `per_side`: each side gets its own range, the largest candidate at which that side's
    answers keep the bar, instead of one range for the worse of the two."""
    if not prompts or not candidates:
        raise ValueError("The search needs prompts and candidate ranges")
    if not max_ppl_ratio > 1:
        raise ValueError("max_ppl_ratio must be above 1")
    dimensions = list(dimensions or vectors.dimensions)
    unit = unit_range(vectors)
    groups = _grouped(dimensions, prompts, prompts_for)
    rows_total = sum(len(group) * (2 * len(candidates) + 1) * len(asked) for asked, group in groups.items())
    at, bars, done = {}, {}, 0
    for asked, group in groups.items():
        keys = [(dim, sign * c) for dim in group for c in sorted(candidates) for sign in (1.0, -1.0)]
        share = len(group) * (2 * len(candidates) + 1) * len(asked)
        bar, judged = _answer_settings(loaded, hooks, vectors.layers, asked,
                                       [unit.layer_deltas({dim: s}) for dim, s in keys], params, embedder,
                                       _part_of(progress, done, share, rows_total), vectors.steer_prompt)
        at.update(zip(keys, judged))
        bars.update(dict.fromkeys(group, bar))
        done += share
    results, bar = {}, {"max_ppl_ratio": max_ppl_ratio, "min_relevance": min_relevance}
    for dim in dimensions:
        side = {name: {c: at[(dim, sign * c)] for c in sorted(candidates)} for name, sign in (("+", 1.0), ("−", -1.0))}
        worse = {c: _worse(up, down) for c, up, down in zip(side["+"], side["+"].values(), side["−"].values())}
        chosen, within = _range_of(worse, **bar)
        negative = None
        if per_side:
            (chosen, up), (negative, down) = _range_of(side["+"], **bar), _range_of(side["−"], **bar)
            within = up and down
        results[dim] = RangeSearch(dim, chosen, bars[dim].perplexity, {c: m[0] for c, m in worse.items()}, within,
                                   {c: m[1] for c, m in worse.items()}, {c: m[2] for c, m in worse.items()},
                                   negative, side)
    return results


def _worse(one: tuple[float, float, int], other: tuple[float, float, int]) -> tuple[float, float, int]:
    """Two settings' (perplexity ratio, relevance, answers made degenerate) taken together: the
    higher ratio, the lower relevance, every answer made degenerate."""
    return max(one[0], other[0]), min(one[1], other[1]), one[2] + other[2]


def _keeps_bar(measured: tuple[float, float, int], max_ppl_ratio: float, min_relevance: float) -> bool:
    """Whether one setting's (perplexity ratio, relevance, answers made degenerate) keep the bar."""
    ratio, kept, made = measured
    return ratio <= max_ppl_ratio and kept >= min_relevance and made == 0


def _grouped(dimensions: Sequence[str], prompts: Sequence[str],
             prompts_for: Mapping[str, Sequence[str]] | None) -> dict[tuple[str, ...], list[str]]:
    """The prompts → the dimensions answered on them: a dimension in `prompts_for` on its own (as
    many as `prompts`), the rest on `prompts`."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for dim in dimensions:
        own = (prompts_for or {}).get(dim)
        groups.setdefault(tuple(own[: len(prompts)] if own else prompts), []).append(dim)
    return groups


def _range_of(measured: Mapping[float, tuple[float, float, int]], *, max_ppl_ratio: float,
              min_relevance: float) -> tuple[float, bool]:
    """`functional_range_from` over candidate → (perplexity ratio, relevance, made degenerate)."""
    return functional_range_from({c: m[0] for c, m in measured.items()}, max_ppl_ratio,
                                 relevances={c: m[1] for c, m in measured.items()}, min_relevance=min_relevance,
                                 degenerate={c: m[2] for c, m in measured.items()})


def _part_of(progress: Progress | None, before: float, share: float, total: float) -> Progress | None:
    """`progress` for one part of a search: its (done, total) mapped onto the whole, of which it
    is `share` units after `before` (its own total may change as it goes)."""
    if progress is None or share == total:
        return progress
    scale = 1000
    return lambda done, part_total: progress(round(scale * (before + share * done / max(part_total, 1)) / total), scale)


def sign_patterns(dimensions: Sequence[str]) -> list[dict[str, float]]:
    """A few ways to set every dimension at full strength: all +1, all −1, and alternating."""
    return [
        dict.fromkeys(dimensions, 1.0),
        dict.fromkeys(dimensions, -1.0),
        {dim: 1.0 if i % 2 else -1.0 for i, dim in enumerate(dimensions)},
        {dim: -1.0 if i % 2 else 1.0 for i, dim in enumerate(dimensions)},
    ]


def joint_prompts(prompts: Sequence[str], prompts_for: Mapping[str, Sequence[str]] | None) -> list[str]:
    """The questions the joint budget is searched on: as many as `prompts`, taken in turn from
    each topical dimension's own (`prompts_for`), else `prompts`: where topical dimensions
    steer together (`bench/heldout.py --joint-on topic`; measured, not kept for the site: the
    all-+1 pattern kept less relevance under the budget it chose)."""
    lists = [list(own) for own in (prompts_for or {}).values() if own]
    mixed = [own[i] for i in range(max(map(len, lists), default=0)) for own in lists if i < len(own)]
    return mixed[: len(prompts)] or list(prompts)


@dataclass
class JointSearch:
    joint_range: float | None  # None: no candidate cap was needed (the plain sum kept the answer)
    # candidate (None = no cap) → the worst (perplexity ratio, relevance, answers made degenerate) over the patterns
    measured: dict[float | None, tuple[float, float, int]]
    within_limit: bool = True


def search_joint_range(
    loaded: LoadedModel,
    vectors: SteeringVectors,
    prompts: Sequence[str],
    *,
    candidates: Sequence[float] = JOINT_CANDIDATES,
    max_ppl_ratio: float = MAX_PPL_RATIO,
    min_relevance: float = MIN_RELEVANCE,
    hooks: SteeringHooks | None = None,
    params: GenerationParams = RANGE_PARAMS,
    embedder: SentenceEmbedder | None = None,
    progress: Progress | None = None,
    words: Mapping[str, tuple[str, str]] | None = None,
) -> JointSearch:
    """The budget of the summed addition (residual-norm units; `SteeringVectors.joint_range`):
    the largest candidate cap at which every dimension at full strength together (the
    `sign_patterns`) keeps the answer by the functional range's bar. `vectors` carry their
    functional ranges already. Without a cap the sum of six full-strength vectors is measured
    too; when it passes, no cap is needed (None). `words` ({dimension: (positive end, negative
    end)}, the worded dimensions): each pattern also says those in words, as served."""
    if not prompts or not candidates:
        raise ValueError("The search needs prompts and candidate caps")
    patterns = sign_patterns(vectors.dimensions)
    caps: list[float | None] = [*sorted(candidates), None]
    settings = [vectors.with_joint_range(cap).layer_deltas(pattern) for cap in caps for pattern in patterns]
    said = [preferences_instruction([(*words[dim], sign) for dim, sign in pattern.items() if dim in words])
            for pattern in patterns] if words else None
    _, judged = _answer_settings(loaded, hooks, vectors.layers, prompts, settings, params, embedder, progress,
                                 vectors.steer_prompt, said * len(caps) if said else None)
    k = len(patterns)
    measured = {}
    for i, cap in enumerate(caps):
        worst = judged[i * k : (i + 1) * k]
        measured[cap] = (max(x[0] for x in worst), min(x[1] for x in worst), sum(x[2] for x in worst))
    if _keeps_bar(measured[None], max_ppl_ratio, min_relevance):
        return JointSearch(None, measured)
    finite = [c for c in caps if c is not None]
    chosen, within = functional_range_from(
        {c: measured[c][0] for c in finite}, max_ppl_ratio, relevances={c: measured[c][1] for c in finite},
        min_relevance=min_relevance, degenerate={c: measured[c][2] for c in finite},
    )
    return JointSearch(chosen, measured, within)


@dataclass
class WordingChoice:
    worded: list[str]  # the dimensions whose words kept the bar at both ends
    # dimension → "+" / "−" → (perplexity ratio, relevance, answers made degenerate) at ±1 with words
    measured: dict[str, dict[str, tuple[float, float, int]]]
    # worded dimensions whose words kept the bar only with their steering lowered: dimension → the range
    ranges: dict[str, float] = field(default_factory=dict)


def choose_worded(
    loaded: LoadedModel,
    vectors: SteeringVectors,
    prompts: Sequence[str],
    ends: Mapping[str, tuple[str, str]],
    *,
    prompts_for: Mapping[str, Sequence[str]] | None = None,
    also_on: Mapping[str, Sequence[str]] | None = None,
    lower_to: Sequence[float] = (),
    max_ppl_ratio: float = MAX_PPL_RATIO,
    min_relevance: float = MIN_RELEVANCE,
    hooks: SteeringHooks | None = None,
    params: GenerationParams = RANGE_PARAMS,
    embedder: SentenceEmbedder | None = None,
    progress: Progress | None = None,
) -> WordingChoice:
    """Which of the dimensions of `ends` ({dimension: (positive end, negative end) in words})
    to also say in words (gated prompt + steering): those whose answers at ±1, steered within
    `vectors`' functional ranges and told the preference in words, keep the functional range's
    bar on `prompts` (the search's, never the evaluation's), judged as one candidate of the
    range search is: perplexity within `max_ppl_ratio`, relevance at least
    `min_relevance`, none made degenerate. Words move a preference further than steering
    within its range (on the held-out split, 2026-12-07: age, ambiance and time reached every
    target only with them), but some dimensions' words pull the answer off the question
    (cost +1 there: "the luxury of an extended stay in Europe", relevance 0.74).

    `also_on`: a dimension listed there must keep the bar on those prompts too, each end judged
    by the worse of the two sets: a topical dimension's words are said only on turns about its
    subject, so they are judged on such requests as well as on the neutral prompts.

    `lower_to`: candidate ranges for a dimension whose words fail the bar at its own range: the
    largest of them below that range, and at least half of it, at which words and steering keep
    the bar makes it worded, steered at that range (`WordingChoice.ranges`). The range was
    searched without words, and words add to the steering's push (time at −1, 2026-12-07:
    perplexity ×2.19 and an answer made degenerate at 0.025 with words, within the bar without)."""
    if not prompts:
        raise ValueError("The choice needs prompts")
    dimensions = [dim for dim in vectors.dimensions if dim in ends]
    setup = {"loaded": loaded, "vectors": vectors, "prompts": prompts, "ends": ends, "prompts_for": prompts_for,
             "also_on": also_on, "hooks": hooks, "params": params, "embedder": embedder}
    keeps = lambda sides: all(_keeps_bar(m, max_ppl_ratio, min_relevance) for m in sides.values())  # noqa: E731
    # First at ±1, each end at its own range; then the lower candidates of those that failed.
    at_one = _words_measured(**setup, ranges_of=dict.fromkeys(dimensions, [None]),
                             progress=_part_of(progress, 0, 1, 2) if lower_to else progress)
    measured = {dim: by[None] for dim, by in at_one.items()}
    lower = {dim: sorted((c for c in lower_to if vectors.functional_range[dim] / 2 <= c < vectors.functional_range[dim]),
                         reverse=True)
             for dim in dimensions if not keeps(measured[dim])}
    lower = {dim: candidates for dim, candidates in lower.items() if candidates}
    ranges: dict[str, float] = {}
    if lower:
        for dim, by in _words_measured(**setup, ranges_of=lower, progress=_part_of(progress, 1, 1, 2)).items():
            kept = next((c for c in lower[dim] if keeps(by[c])), None)
            if kept is not None:
                ranges[dim], measured[dim] = kept, by[kept]
    worded = [dim for dim in dimensions if keeps(measured[dim])]
    return WordingChoice(worded, measured, ranges)


def _words_measured(
    *, loaded: LoadedModel, vectors: SteeringVectors, prompts: Sequence[str], ends: Mapping[str, tuple[str, str]],
    prompts_for, also_on, hooks, params, embedder, ranges_of: Mapping[str, Sequence[float | None]],
    progress: Progress | None,
) -> dict[str, dict[float | None, dict[str, tuple[float, float, int]]]]:
    """For `choose_worded`: each dimension of `ranges_of` answered with its words at ±range for
    each of its ranges (None: ±1, each end at its own range), on its prompts and its `also_on`
    ones, each end the worse of the two sets; dimension → range → "+"/"−" → (perplexity ratio,
    relevance, made degenerate). The dimensions that share prompts are answered in one batch."""
    dimensions = list(ranges_of)
    groups = list(_grouped(dimensions, prompts, prompts_for).items())
    if also_on:
        groups += _grouped([dim for dim in dimensions if also_on.get(dim)], prompts, also_on).items()
    measured: dict[str, dict[float | None, dict[str, tuple[float, float, int]]]] = {}
    for done, (asked, group) in enumerate(groups):
        keys = [(dim, r, sign) for dim in group for r in ranges_of[dim] for sign in (1.0, -1.0)]
        settings = [vectors.layer_deltas({dim: sign if r is None else sign * r / vectors.range_at(dim, sign)})
                    for dim, r, sign in keys]
        _, judged = _answer_settings(loaded, hooks, vectors.layers, asked, settings, params, embedder,
                                     _part_of(progress, done, 1, len(groups)), vectors.steer_prompt,
                                     [preference_instruction(*ends[dim], sign) for dim, _, sign in keys])
        for (dim, r, sign), figures in zip(keys, judged):
            sides = measured.setdefault(dim, {}).setdefault(r, {})
            side = "+" if sign > 0 else "−"
            sides[side] = _worse(sides[side], figures) if side in sides else figures
    return measured
