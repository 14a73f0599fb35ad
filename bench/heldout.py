"""The default dimensions on the held-out split, straight on the engine (no database): how
clearly each steers, beside plain prompting and prompting + steering. One JSON line per
dimension, with the settings it ran under; then the evaluation targets (docs/evaluation.md) checked.

    .venv/bin/python bench/heldout.py [--method caa] [--limit 8] [--tokens 48] [--vectors FILE]
                                      [--dtype float32|bfloat16] [--as-is] [--answers FILE]

Vectors are computed as the platform computes a vector set (`compute_vectors` from the
shipped pairs, then the functional-range search on the neutral prompts under the shipped
settings) and saved to --vectors; an existing file is reused only when its recorded data
fingerprint and options are those of this run. Extraction and the range search never see
the held-out prompts or reference texts (steering/data/heldout.json).

--dtype is the dtype the answers are generated and scored in (float32 by default). Vectors
are computed in float32 only: with another dtype the run reuses the float32 run's --vectors
file and stops if there is none, so a bfloat16 table compares the serving dtype on the same
vectors (extracted in bf16 instead, they differ by cosine >= 0.9999: docs/benchmarks.md).

--as-is evaluates the --vectors file exactly as it is (its ranges and joint range), e.g. a
file made by an older version of the code: the before/after comparison of issue 24. With
--search-to FILE, the file's vectors get this code's range and joint-range search (saved there)
instead of being extracted again.

Each dimension is evaluated on the first --limit suggestion prompts of the split and its own
on-topic prompts. Targets per dimension (issues 18 and 24): Spearman ρ of the mean Effect with
strength = 1.0 over the five strengths, Effect(+1) − Effect(−1) ≥ 0.12, PNE > 0 at +1 and < 0
at −1; at ±1 relevance ≥ 0.9, perplexity ratio ≤ 2, no answer degenerate whose unsteered answer is not
(greedy SmolLM2 loops on one held-out prompt unsteered). Then all six
dimensions at ±1 together (four sign patterns, on the suggestion prompts): relevance ≥ 0.85, no
answer made degenerate, every dimension's Effect moved its way; and the five topical dimensions at
+1 on the everyday prompts that concern none: mean cosine of the answers to the unsteered
ones ≥ 0.9. --answers writes every answer, for reading.

Each dimension's spread and ±1 relevance, and each pattern's relevance, come with a 90 %
bootstrap interval over the prompts (measures.bootstrap_interval): a dozen greedy answers move
these figures by about 0.1 from one set of prompts to the next. The last line counts the targets
met and names the spread and relevance misses whose whole interval lies below the bar (the
misses another dozen prompts would most likely repeat); the together line does the same for the
patterns' relevance and for each dimension's movement (an interval wholly on the wrong side of 0).
In bfloat16 the answers depend on the host and on OMP_NUM_THREADS (2026-12-07: 30 of 36 with one
thread, 28 with two, the same file): compare runs only on one host at one thread count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.data import catalog  # noqa: E402
from steering.engine import GenerationParams, SteerableModel, SteeringVectors, served_greedy  # noqa: E402
from steering.engine.prompting import WordedPrompt, preference_instruction  # noqa: E402
from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.measures import (  # noqa: E402
    answer_similarity, bootstrap_interval, degenerate_rate, effect_scores, is_degenerate, prompt_similarities,
    relevance,
)
from steering.engine.range_search import (  # noqa: E402
    MAX_PPL_RATIO, RANGE_CANDIDATES, RANGE_PARAMS, RANGE_PROMPTS, choose_worded, joint_prompts, measured_ranges,
    search_functional_range, search_joint_range, sign_patterns,
)
from steering.engine.condition_reading import compute_conditions  # noqa: E402
from steering.engine.generation import stream_batch  # noqa: E402
from steering.engine.request import steered_request  # noqa: E402
from steering.engine.sweep import evaluate_dimension  # noqa: E402
from steering.engine.extraction import orthogonalised  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
# The dimensions that concern a subject (formality is a style: it applies to any answer).
TOPICAL = ("age", "ambiance", "cost", "culture", "time")


def data_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "steering/data/dimensions").glob("*.json")) + [ROOT / "steering/data/prompts/neutral.json"]:
        digest.update(path.read_bytes())
    # The engine's code, but for the prompting baseline's wording (it never touches vectors).
    for path in sorted((ROOT / "steering/engine").glob("*.py")):
        if path.name != "prompting.py":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def vectors_for(model: SteerableModel, args, options: dict) -> tuple[SteeringVectors, list[str] | None]:
    """The vectors to evaluate, and the worded dimensions when searching them chose these
    already (None: not chosen yet; the choice is deterministic, so it is made once)."""
    path, recorded_at = Path(args.vectors), Path(args.vectors).with_suffix(".options.json")
    if args.as_is:
        return searched(model, SteeringVectors.load(path), args) if args.search_to else (SteeringVectors.load(path), None)
    if path.exists():
        recorded = json.loads(recorded_at.read_text()) if recorded_at.exists() else None
        if recorded == options:
            return SteeringVectors.load(path), None
    if args.dtype != args.compute_dtype:
        sys.exit(f"{path}: no vectors computed under these options; run once with --dtype {args.compute_dtype} first")
    if path.exists():
        print(json.dumps({"note": f"{path} was computed under other options; recomputing", "was": recorded}), flush=True)
    examples = {name: catalog.examples(name) for name in catalog.dimension_names()}
    vectors = model.compute_vectors(examples, method=args.method, read=args.read, steer_prompt=args.steer_prompt,
                                    **({"layers": args.layers} if args.layers else {}))
    if args.orthogonalise:
        vectors = orthogonalised(vectors)
    vectors, worded = searched(model, vectors, args)
    vectors = with_conditions(model, vectors)
    vectors.save(path)
    recorded_at.write_text(json.dumps(options))
    return vectors, worded


def with_conditions(model: SteerableModel, vectors: SteeringVectors) -> SteeringVectors:
    """The conditions of the topical dimensions, fitted as a computed vector set's are."""
    on_topic, off_topic = catalog.condition_prompts()
    conditions, report = compute_conditions(model.loaded, on_topic, off_topic)
    return vectors.with_conditions(conditions, {"layer": report.layer, "accuracy": report.accuracy})


def searched(model: SteerableModel, vectors: SteeringVectors, args) -> tuple[SteeringVectors, list[str] | None]:
    """`vectors` with the functional ranges and the joint range this code's searches find, and
    the worded dimensions chosen on those ranges (None with --joint-without-words)."""
    started = time.monotonic()
    params = answer_params(args, args.range_tokens)
    # --search-on topic: a topical dimension on the questions about its subject (measured, not kept).
    on_topic = catalog.condition_prompts()[0] if args.search_on == "topic" else {}
    prompts = catalog.suggestion_prompts() if args.search_on == "suggestions" else catalog.range_prompts(args.range_prompts)
    topical = {dim: on_topic[dim] for dim in TOPICAL if dim in on_topic}
    found = search_functional_range(model.loaded, vectors, prompts, prompts_for=topical, per_side=args.sides == "each",
                                    max_ppl_ratio=MAX_PPL_RATIO, hooks=model.hooks, params=params)
    vectors = vectors.with_ranges(*measured_ranges(found))
    print(json.dumps({"ranges": {
        dim: {"range": r.functional_range, "negative": r.negative_range, "within": r.within_limit,
              "sides": {side: {str(c): [round(m[0], 2), round(m[1], 3), m[2]] for c, m in by.items()}
                        for side, by in r.sides.items()},
              "ratios": {str(c): round(x, 2) for c, x in r.ratios.items()},
              "relevances": {str(c): round(x, 3) for c, x in r.relevances.items()},
              "degenerate": {str(c): x for c, x in r.degenerate.items()}}
        for dim, r in found.items()}}), flush=True)
    # As a computed set: the worded dimensions are chosen on these ranges and said in every pattern.
    worded = None
    if not args.joint_without_words:
        worded, lowered = worded_dimensions(model, vectors, args)
        vectors = vectors.with_ranges(lowered)
    vectors = with_joint_searched(model, vectors, joint_prompts(prompts, topical) if args.joint_on == "topic" else prompts,
                                  worded or [], args, started)
    if args.search_to:
        vectors.save(args.search_to)
    return vectors, worded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="caa", choices=["caa", "probe", "pca"])
    parser.add_argument("--read", default="answer", choices=["answer", "mean", "last"])
    parser.add_argument("--layers", type=lambda t: [int(x) for x in t.split(",")], default=None)
    parser.add_argument("--range-prompts", type=int, default=RANGE_PROMPTS)
    parser.add_argument("--orthogonalise", action="store_true",
                        help="make the dimensions' directions mutually orthogonal before the search (extraction.orthogonalised)")
    parser.add_argument("--sides", default="worse", choices=["worse", "each"],
                        help="one range for the worse of the two ends (the site's default), or each end its own "
                             "(negative_range; STEERLAB_RANGE_PER_SIDE; measured 2026-12-07 and not kept)")
    parser.add_argument("--search-on", default="neutral", choices=["topic", "neutral", "suggestions"],
                        help="the prompts a topical dimension's range is searched on: the neutral prompts (as the "
                             "site computes sets), or its on-topic questions (measured 2026-12-06 and not kept: "
                             "docs/evaluation.md, fourth pass), or open suggestion requests (steering/data/prompts/"
                             "suggestions.json, every dimension and the joint budget; measured 2026-12-06)")
    parser.add_argument("--joint-on", default="neutral", choices=["topic", "neutral"],
                        help="the prompts the joint budget is searched on: the neutral prompts (as the site computes "
                             "sets), or the topical dimensions' on-topic questions in turn (measured, not kept)")
    parser.add_argument("--worded", default="none",
                        help="the dimensions also said in words where they apply (gated prompt + steering): none, "
                             "auto (range_search.choose_worded on the search's prompts, as a computed set), or a "
                             "comma-separated list")
    parser.add_argument("--words-lower", action="store_true",
                        help="with --worded auto: a dimension whose words fail the bar at its range is worded at the "
                             "largest lower candidate (at least half its range) where they keep it "
                             "(range_search.choose_worded(lower_to=...); measured 2026-12-07 and not kept: "
                             "docs/evaluation.md)")
    parser.add_argument("--words-on", default="both", choices=["neutral", "suggestions", "both"],
                        help="the prompts --worded auto judges a topical dimension's words on: both the neutral "
                             "prompts and open suggestion requests (as a computed set's, since 2026-12-07 evening), "
                             "one of them (measured, not kept: docs/evaluation.md)")
    parser.add_argument("--joint-words", action="store_true",
                        help="with --as-is and --worded: search the file's joint budget again with the worded dimensions "
                             "said in every pattern, as a computed set's is (a search run here always does)")
    parser.add_argument("--joint-without-words", action="store_true",
                        help="search the joint budget with no words said, as sets computed before 2026-12-07 were "
                             "(docs/evaluation.md, 'A budget that leaves one dimension alone')")
    parser.add_argument("--unguarded", action="store_true",
                        help="plain greedy answers, without the served chat's repetition guards (runs before 2026-12-06 evening)")
    parser.add_argument("--range-tokens", type=int, default=RANGE_PARAMS.max_new_tokens,
                        help="the length of the range searches' answers")
    parser.add_argument("--limit", type=int, default=8, help="held-out suggestion prompts per strength")
    parser.add_argument("--as-is", action="store_true", help="evaluate the --vectors file as it is")
    parser.add_argument("--search-to", default=None, help="with --as-is: search the ranges anew and save here")
    parser.add_argument("--answers", default=None, help="write every answer to this JSON file")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dimensions", default=",".join(catalog.dimension_names()))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--vectors", default="/tmp/steerlab-heldout-vectors.safetensors")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the dtype vectors and ranges are computed in (bfloat16: as the site computes its sets)")
    parser.add_argument("--steer-prompt", action="store_true",
                        help="compute a set that steers the prompt too (sets before 2026-12-06); default: the answer only")
    parser.add_argument("--system-prompt", default="",
                        help="what frames every chat, as STEERLAB_SYSTEM_PROMPT does the site's (default: the chat "
                             "template's own, as the site's default); measured 2026-12-06 and not kept: \"You are a "
                             "helpful assistant. Answer the user's question directly and concretely.\" (docs/evaluation.md)")
    args = parser.parse_args()

    model = SteerableModel.load(dtype=args.dtype, system_prompt=args.system_prompt)
    options = {"system_prompt": args.system_prompt, "method": args.method, "read": args.read, "layers": args.layers,
               "range_prompts": args.range_prompts, "range_tokens": args.range_tokens, "search_on": args.search_on, "unguarded": args.unguarded, "joint_on": args.joint_on, "sides": args.sides, "orthogonalise": args.orthogonalise, "worded": args.worded, "words_on": args.words_on, "words_lower": args.words_lower, "joint_without_words": args.joint_without_words, "steer_prompt": args.steer_prompt, "data_and_engine": data_fingerprint(),
               **({"compute_dtype": args.compute_dtype} if args.compute_dtype != "float32" else {})}
    vectors, worded = vectors_for(model, args, options)
    if not vectors.conditions:  # a file from before conditional steering: fitted as a new set's are
        vectors = with_conditions(model, vectors)
    vectors = model.add_vectors(vectors)
    if worded is None:
        worded, lowered = worded_dimensions(model, vectors, args)
        if lowered:
            vectors = model.add_vectors(vectors.with_ranges(lowered))
    if args.joint_words and worded:
        vectors = model.add_vectors(with_joint_searched(model, vectors, catalog.range_prompts(args.range_prompts),
                                                        worded, args, time.monotonic()))
    split = catalog.heldout()
    prompts = split["prompts"][: args.limit]
    settings = {**options, "dtype": args.dtype, "split": "heldout", "prompts": len(prompts), "tokens": args.tokens,
                "strengths": list(STRENGTHS), "baselines": not args.no_baselines, "layers_steered": list(vectors.layers),
                "as_is": args.as_is, "ranges": vectors.functional_range, "negative_ranges": vectors.negative_range,
                "joint_range": vectors.joint_range,
                "steers_prompt": vectors.steer_prompt, "conditions": sorted(vectors.conditions), "worded": worded,
                "joint_words": args.joint_words}
    print(json.dumps({"settings": settings}), flush=True)
    verdicts, answers, clear = {}, {}, {}
    for name in args.dimensions.split(","):
        spec = catalog.dimension(name)
        asked = prompts + split["on_topic"][name]

        def instructions(strength, spec=spec):
            return preference_instruction(spec["prompt_positive"], spec["prompt_negative"], strength)

        result = evaluate_dimension(
            model.loaded, vectors, name, asked, catalog.heldout_references(name), strengths=STRENGTHS,
            hooks=model.hooks, params=answer_params(args, args.tokens),
            instructions=None if args.no_baselines else instructions, words=instructions if name in worded else None,
        )
        rows = {"steering": (result.points, result.spearman_of_means, result.spearman)}
        rows.update({k: (b.points, b.spearman_of_means, b.spearman) for k, b in result.baselines.items()})
        line = {"dimension": name, "range": vectors.range_text(name), "worded": name in worded, "seconds": result.seconds}
        for kind, (points, rho_means, rho) in rows.items():
            at = {p.strength: p for p in points}
            figures = {
                "effects": [round(p.effect, 4) for p in points],
                "rho_means": round(rho_means, 3), "rho_answers": round(rho, 3),
                "spread": round(at[1.0].effect - at[-1.0].effect, 4),
                "pne": [round(at[-1.0].pne, 4), round(at[1.0].pne, 4)],
                "ppl_ratio": [round(at[-1.0].ppl_ratio, 2), round(at[1.0].ppl_ratio, 2)],
                "relevance": [round(at[-1.0].relevance, 3), round(at[1.0].relevance, 3)],
                "degenerate": [at[-1.0].degenerate, at[0.0].degenerate, at[1.0].degenerate],
                # Answers degenerate at ±1 whose unsteered answer is not (a greedy loop at 0 is not steering's).
                "made_degenerate": [made_degenerate(at[s].answers, at[0.0].answers) for s in (-1.0, 1.0)],
                "composite": [round(at[-1.0].composite, 3), round(at[1.0].composite, 3)],
                "intervals": intervals(at),
            }
            figures["targets_met"] = {
                "rho": figures["rho_means"] >= 0.999, "spread": figures["spread"] >= 0.12,
                "pne": figures["pne"][1] > 0 > figures["pne"][0], "ppl": max(figures["ppl_ratio"]) <= 2.0,
                "relevance": min(figures["relevance"]) >= 0.9, "degenerate": max(figures["made_degenerate"]) == 0,
            }
            figures["clear_misses"] = clear_misses(figures)
            line[kind] = figures
        verdicts[name] = line["steering"]["targets_met"]
        clear[name] = line["steering"]["clear_misses"]
        print(json.dumps(line), flush=True)
        answers[name] = {"prompts": asked, **{str(p.strength): p.answers for p in result.points},
                         **{kind: {str(p.strength): p.answers for p in b.points} for kind, b in result.baselines.items()}}
    if set(args.dimensions.split(",")) == set(vectors.dimensions):
        together, answers["together"] = together_check(model, vectors, prompts, split["everyday"], split["on_topic"],
                                                       answer_params(args, args.tokens), worded)
        verdicts["together"] = together
    print(json.dumps({"targets_met": verdicts}), flush=True)
    alone = {name: met for name, met in verdicts.items() if name != "together"}
    print(json.dumps({"per_dimension_met": sum(sum(met.values()) for met in alone.values()),
                      "per_dimension_targets": sum(len(met) for met in alone.values()),
                      "missed": {name: [t for t, ok in met.items() if not ok] for name, met in alone.items()},
                      "missed_beyond_the_interval": clear}), flush=True)
    if args.answers:
        Path(args.answers).write_text(json.dumps(answers, indent=1, ensure_ascii=False))


def catalog_words(dimension: str) -> tuple[str, str]:
    """(positive end, negative end) of a shipped dimension in words, as PreferenceDimension.words gives them."""
    spec = catalog.dimension(dimension)
    return spec["prompt_positive"], spec["prompt_negative"]


def worded_dimensions(model: SteerableModel, vectors: SteeringVectors, args) -> tuple[list[str], dict[str, float]]:
    """--worded: the dimensions said in words where they apply, and the ranges lowered for
    them; with "auto", chosen as a computed set's are, on the range search's prompts (never the
    held-out split)."""
    if args.worded == "none":
        return [], {}
    if args.worded != "auto":
        return [dim for dim in args.worded.split(",") if dim], {}
    started = time.monotonic()
    ends = {dim: catalog_words(dim) for dim in vectors.dimensions}
    # --words-on suggestions: a topical dimension judged on open suggestion requests, the kind of
    # turn its words are said on (its condition gates them), instead of the neutral prompts; both:
    # on both sets, as a computed set's are. A style dimension is judged on the neutral prompts.
    suggestions = {dim: catalog.suggestion_prompts() for dim in TOPICAL}
    choice = choose_worded(model.loaded, vectors, catalog.range_prompts(args.range_prompts), ends, hooks=model.hooks,
                           params=answer_params(args, args.range_tokens),
                           prompts_for=suggestions if args.words_on == "suggestions" else None,
                           also_on=suggestions if args.words_on == "both" else None,
                           lower_to=RANGE_CANDIDATES if args.words_lower else ())
    print(json.dumps({"worded": choice.worded, "lowered": choice.ranges, "seconds": round(time.monotonic() - started),
                      "measured": {dim: {side: [round(m[0], 2), round(m[1], 3), m[2]] for side, m in by.items()}
                                   for dim, by in choice.measured.items()}}), flush=True)
    return choice.worded, choice.ranges


def with_joint_searched(model: SteerableModel, vectors: SteeringVectors, prompts: list[str], worded: list[str],
                        args, started: float) -> SteeringVectors:
    """`vectors` with the joint budget searched on `prompts` as patterns are served: the `worded`
    dimensions said in words in every sign pattern."""
    words = {dim: catalog_words(dim) for dim in worded}
    joint = search_joint_range(model.loaded, vectors, prompts, hooks=model.hooks,
                               params=answer_params(args, args.range_tokens), words=words)
    print(json.dumps({"search_seconds": round(time.monotonic() - started), "joint_range": joint.joint_range,
                      "worded": worded,
                      "joint_measured": {str(c): [round(m[0], 2), round(m[1], 3), m[2]] for c, m in joint.measured.items()}}),
          flush=True)
    return vectors.with_joint_range(joint.joint_range)


def intervals(at: dict) -> dict:
    """90 % bootstrap intervals over the prompts (measures.bootstrap_interval) of the spread and
    of the relevance at −1 and +1: how far each could move on another dozen such prompts."""
    def spread(idx):
        return sum(at[1.0].effects[i] - at[-1.0].effects[i] for i in idx) / len(idx)

    rounded = lambda pair: [round(x, 3) for x in pair]  # noqa: E731
    return {"spread": rounded(bootstrap_interval(spread, len(at[0.0].effects))),
            "relevance": [rounded(at[s].relevance_interval) for s in (-1.0, 1.0)]}


def moved_way(scores: list[float], base: list[float], sign: float) -> tuple[float, list[float]]:
    """How far answers moved a dimension's Effect its way (`sign`) from the same prompts'
    unsteered answers, the mean and its 90 % bootstrap interval over the prompts."""
    def mean(idx):
        return sign * sum(scores[i] - base[i] for i in idx) / len(idx)

    return round(mean(range(len(scores))), 4), [round(x, 4) for x in bootstrap_interval(mean, len(scores))]


def clear_misses(figures: dict) -> list[str]:
    """The missed spread and relevance targets whose whole interval lies below the bar: misses
    another dozen prompts would most likely repeat (the others are within the prompts' noise)."""
    clear = []
    if not figures["targets_met"]["spread"] and figures["intervals"]["spread"][1] < 0.12:
        clear.append("spread")
    if not figures["targets_met"]["relevance"] and min(hi for _, hi in figures["intervals"]["relevance"]) < 0.9:
        clear.append("relevance")
    return clear


def words_of(prompt: str, preferences: dict[str, float], worded: list[str]) -> WordedPrompt:
    """`preferences` of the `worded` dimensions in words, for one question."""
    ends = {dim: (*catalog_words(dim), strength) for dim, strength in preferences.items() if dim in worded}
    return WordedPrompt([{"role": "user", "content": prompt}], ends)


def answer_params(args, tokens: int) -> GenerationParams:
    """Greedy answers of `tokens`, with the served chat's repetition guards unless --unguarded."""
    return GenerationParams(max_new_tokens=tokens) if args.unguarded else served_greedy(tokens)


def made_degenerate(answers: list[str], unsteered: list[str]) -> int:
    return sum(is_degenerate(a) and not is_degenerate(u) for a, u in zip(answers, unsteered))


def answers_to(model: SteerableModel, requests: list) -> list[str]:
    """The requests answered in one batch, their texts in order."""
    texts = [""] * len(requests)
    for event in stream_batch(model.loaded, model.hooks, requests):
        texts[event.index] += event.text
    return texts


def together_check(model: SteerableModel, vectors: SteeringVectors, prompts: list[str], everyday: list[str],
                   on_topic: dict[str, list[str]], params: GenerationParams, worded: list[str]) -> tuple[dict, dict]:
    """As served (`steered_request`: the joint budget, the set's prompt policy), in one batch:
    - all dimensions at ±1 together (sign_patterns) on `prompts`, every one applied (no
      condition): the most that can be added at once;
    - the profile of the topical dimensions at +1, conditional as the site serves them, on the
      `everyday` prompts that concern none of them (answers compared with the unsteered ones)
      and on each topical dimension's own held-out `on_topic` prompts (its Effect must move).
    The `worded` dimensions are said in words too, each where it applies (GenerationRequest.apply_words)."""
    patterns = sign_patterns(vectors.dimensions)
    topical = [dim for dim in TOPICAL if dim in vectors.dimensions]
    profile, gates = dict.fromkeys(topical, 1.0), dict.fromkeys(topical)
    topic_prompts = [(dim, p) for dim in topical for p in on_topic[dim]]

    def request(prompt, preferences, conditional=False):
        return steered_request(vectors, model.loaded.chat_ids(prompt), preferences,
                               topical=gates if conditional else None, params=params,
                               worded=words_of(prompt, preferences, worded))

    settings = [{}, *patterns]
    requests = [request(p, s) for s in settings for p in prompts]
    requests += [request(p, prefs, True) for prefs in ({}, profile) for p in everyday]
    requests += [request(p, prefs, True) for prefs in ({}, profile) for _, p in topic_prompts]
    texts = answers_to(model, requests)
    decisions = [r.conditions.decision_dict() if r.conditions else None for r in requests]
    everyday_worded = [r.words or [] for r in requests[len(settings) * len(prompts) + len(everyday):][:len(everyday)]]
    n, e, t, embedder = len(prompts), len(everyday), len(topic_prompts), shared_embedder()
    groups = [texts[i * n : (i + 1) * n] for i in range(len(settings))]
    rest = texts[len(settings) * n :]
    plain_everyday, steered_everyday = rest[:e], rest[e : 2 * e]
    plain_topic, steered_topic = rest[2 * e : 2 * e + t], rest[2 * e + t :]
    topic_decisions = decisions[len(settings) * n + 2 * e + t :]
    everyday_decisions = decisions[len(settings) * n + e : len(settings) * n + 2 * e]
    base_cos = prompt_similarities(embedder, prompts, groups[0])
    base_scores = {dim: effect_scores(embedder, groups[0], *catalog.heldout_references(dim)) for dim in vectors.dimensions}
    figures = []
    for pattern, answered in zip(patterns, groups[1:]):
        moved, moved_intervals = {}, {}
        for dim, sign in pattern.items():
            scores = effect_scores(embedder, answered, *catalog.heldout_references(dim))
            moved[dim], moved_intervals[dim] = moved_way(scores, base_scores[dim], sign)
        cosines = prompt_similarities(embedder, prompts, answered)
        kept = relevance(cosines, base_cos)
        interval = bootstrap_interval(lambda idx: relevance([cosines[i] for i in idx], [base_cos[i] for i in idx]), n)
        figures.append({"pattern": pattern, "relevance": round(kept, 3),
                        "relevance_interval": [round(x, 3) for x in interval], "degenerate": degenerate_rate(answered),
                        "made_degenerate": made_degenerate(answered, groups[0]), "moved_its_way": moved,
                        "moved_intervals": moved_intervals})
    everyday_cos = answer_similarity(embedder, steered_everyday, plain_everyday)
    on_topic_moved, on_topic_intervals, on_topic_applied = {}, {}, {}
    for dim in topical:
        idx = [i for i, (d, _) in enumerate(topic_prompts) if d == dim]
        refs = catalog.heldout_references(dim)
        before = effect_scores(embedder, [plain_topic[i] for i in idx], *refs)
        after = effect_scores(embedder, [steered_topic[i] for i in idx], *refs)
        on_topic_moved[dim], on_topic_intervals[dim] = moved_way(after, before, 1.0)
        on_topic_applied[dim] = sum(bool(topic_decisions[i] and topic_decisions[i][dim]["applied"]) for i in idx) / len(idx)
    everyday_applied = {dim: sum(bool(d and d[dim]["applied"]) for d in everyday_decisions) / e for dim in topical}
    met = {
        "relevance": all(f["relevance"] >= 0.85 for f in figures),
        "degenerate": all(f["made_degenerate"] == 0 for f in figures),
        "every_dimension_moves": all(v > 0 for f in figures for v in f["moved_its_way"].values()),
        "everyday_untouched": everyday_cos >= 0.9,
        "on_topic_moves": all(v > 0 for v in on_topic_moved.values()),
    }
    line = {"together": figures, "everyday_cosine_to_unsteered": round(everyday_cos, 3),
            "everyday_relevance": round(relevance(prompt_similarities(embedder, everyday, steered_everyday),
                                                  prompt_similarities(embedder, everyday, plain_everyday)), 3),
            "everyday_applied": everyday_applied, "everyday_worded": everyday_worded, "on_topic_moved": on_topic_moved,
            "on_topic_intervals": on_topic_intervals, "on_topic_applied": on_topic_applied, "targets_met": met,
            # The misses another set of such prompts would most likely repeat: a whole interval
            # below the bar (relevance), or on the wrong side of 0 (a dimension's movement).
            "missed_beyond_the_interval": {
                "relevance": [f["pattern"] for f in figures if f["relevance_interval"][1] < 0.85],
                "every_dimension_moves": [(f["pattern"], dim) for f in figures
                                          for dim, (_, high) in f["moved_intervals"].items() if high <= 0],
                "on_topic_moves": [dim for dim, (_, high) in on_topic_intervals.items() if high <= 0],
            }}
    print(json.dumps(line), flush=True)
    return met, {"prompts": prompts, "patterns": patterns, "answers": groups, "everyday": everyday,
                 "everyday_unsteered": plain_everyday, "everyday_topical_plus1": steered_everyday,
                 "on_topic": topic_prompts, "on_topic_unsteered": plain_topic, "on_topic_topical_plus1": steered_topic}

if __name__ == "__main__":
    main()
