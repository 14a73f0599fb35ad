"""Conditional steering (issue 24, part 4): with the five topical dimensions at full strength,
do everyday answers stay what they were, while answers on topic still move?

    OMP_NUM_THREADS=1 .venv/bin/python bench/conditional.py [--tokens 48] [--dtype bfloat16]
                                                            [--vectors FILE]

The vector set is made as the site makes one (`compute_vectors` from the shipped pairs, the
functional-range search on the neutral prompts, then the conditions from
steering/data/prompts/conditions.json), in the dtype served, and saved to --vectors (reused
while the data and the engine are unchanged). Answers are greedy, through the engine's
`DecodeBatch` as the site's scheduler runs it, all rows of a kind in shared batches.

- Everyday: EVERYDAY below (none of them in the fitting lists nor the held-out split),
  answered unsteered, then with cost, ambiance, culture, age and time all at +1 (and all at
  −1), without conditions (every dimension steers, as before) and with them. Printed: the mean
  MiniLM cosine of each answer to the unsteered answer to the same prompt (target ≥ 0.9 with
  conditions), and how many rows any dimension applied to.
- On topic: the held-out split's prompts (recommendations), with the same profiles. Printed
  per dimension: Effect(all +1) − Effect(all −1) on its held-out reference texts, without and
  with conditions (it must stay positive), and the share of rows the dimension applied to.
  With --alone, also each topical dimension alone at ±1: its Effect(+1) − Effect(−1) without
  and with conditions.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from steering.data import catalog  # noqa: E402
from steering.engine import GenerationParams, GenerationRequest, SteerableModel, SteeringVectors  # noqa: E402
from steering.engine.condition_reading import compute_conditions  # noqa: E402
from steering.engine.request import steered_request  # noqa: E402
from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.measures import effect_scores  # noqa: E402
from steering.engine.range_search import MAX_PPL_RATIO, RANGE_PROMPTS, search_functional_range  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOPICAL = ["age", "ambiance", "cost", "culture", "time"]
EVERYDAY = [
    "How do I reset a forgotten email password?",
    "What is the capital of Canada?",
    "How do I cite a website in APA style?",
    "Why is my car battery draining overnight?",
    "How do I solve a quadratic equation?",
    "What is the difference between RAM and storage?",
    "How can I stop my glasses from fogging up?",
    "What is a black hole?",
    "How do I back up my phone's contacts?",
    "How do I remove rust from a bike chain?",
]
BATCH = 24


# The code that makes a set's vectors and ranges: a change elsewhere keeps the file. The
# conditions take seconds, and are fitted afresh on every run.
MAKERS = ["extraction.py", "layers.py", "range_search.py", "rows.py", "loading.py", "generation.py", "hooks.py"]


def fingerprint(dtype: str) -> str:
    digest = hashlib.sha256(dtype.encode())
    paths = sorted((ROOT / "steering/data/dimensions").glob("*.json")) + sorted((ROOT / "steering/data/prompts").glob("*.json"))
    for path in paths + [ROOT / "steering/engine" / name for name in MAKERS]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def vectors_for(model: SteerableModel, path: Path, key: str) -> SteeringVectors:
    stamp = path.with_suffix(".key")
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        vectors = SteeringVectors.load(path)
    else:
        started = time.monotonic()
        vectors = model.compute_vectors({name: catalog.examples(name) for name in catalog.dimension_names()})
        found = search_functional_range(
            model.loaded, vectors, catalog.range_prompts(RANGE_PROMPTS), max_ppl_ratio=MAX_PPL_RATIO, hooks=model.hooks
        )
        vectors = vectors.with_ranges({dim: r.functional_range for dim, r in found.items()})
        print(json.dumps({"vectors_seconds": round(time.monotonic() - started), "ranges": vectors.functional_range}),
              flush=True)
        vectors.save(path)
        stamp.write_text(key)
    started = time.monotonic()
    on_topic, off_topic = catalog.condition_prompts()
    conditions, report = compute_conditions(model.loaded, on_topic, off_topic)
    print(json.dumps({"conditions_seconds": round(time.monotonic() - started, 1), "condition_layer": report.layer,
                      "held_out_accuracy": report.accuracy}), flush=True)
    return vectors.with_conditions(conditions, {"layer": report.layer, "accuracy": report.accuracy})


def served(model: SteerableModel, vectors: SteeringVectors, prompt: str, preferences: dict, conditional: bool,
           tokens: int) -> GenerationRequest:
    """The request as the site builds it: topical dimensions conditional, or ("always") none."""
    return steered_request(vectors, model.loaded.chat_ids(prompt), preferences,
                           topical=dict.fromkeys(TOPICAL) if conditional else None,
                           params=GenerationParams(max_new_tokens=tokens))


def generate(model: SteerableModel, rows: list[tuple[str, dict, bool]], tokens: int, vectors: SteeringVectors):
    """Answers and decisions for (prompt, preferences, conditional) rows."""
    requests = [served(model, vectors, prompt, preferences, conditional, tokens) for prompt, preferences, conditional in rows]
    texts = [""] * len(requests)
    for start in range(0, len(requests), BATCH):
        part = requests[start : start + BATCH]
        for event in model.stream_requests(part):
            texts[start + event.index] += event.text
    return texts, [r.conditions.decision_dict() if r.conditions else None for r in requests]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--vectors", default="/tmp/steerlab-conditional-vectors.safetensors")
    parser.add_argument("--alone", action="store_true", help="also each topical dimension alone, on topic")
    parser.add_argument("--skip-profiles", action="store_true", help="only --alone or --cost")
    parser.add_argument("--cost", action="store_true", help="time the prefill with and without conditions")
    args = parser.parse_args()
    started = time.monotonic()
    model = SteerableModel.load(dtype=args.dtype)
    vectors = model.add_vectors(vectors_for(model, Path(args.vectors), fingerprint(args.dtype)))
    on_topic_prompts = catalog.heldout()["prompts"]
    print(json.dumps({"settings": {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"), "dtype": args.dtype,
        "tokens": args.tokens, "greedy": True, "everyday_prompts": len(EVERYDAY), "on_topic_prompts": len(on_topic_prompts),
        "topical": TOPICAL, "ranges": vectors.functional_range, "layers": vectors.layers,
        "condition_layer": next(iter(vectors.conditions.values())).layer,
        "thresholds": {d: round(c.threshold, 4) for d, c in vectors.conditions.items()},
    }}), flush=True)
    profiles = {"+1": dict.fromkeys(TOPICAL, 1.0), "-1": dict.fromkeys(TOPICAL, -1.0)}
    configs = [("unsteered", {}, False)] + [
        (f"{sign} {mode}", profile, mode == "conditions")
        for sign, profile in profiles.items() for mode in ("always", "conditions")
    ]
    embedder = shared_embedder()
    for kind, prompts in () if args.skip_profiles else (("everyday", EVERYDAY), ("on_topic", on_topic_prompts)):
        rows = [(p, prefs, cond) for _, prefs, cond in configs for p in prompts]
        texts, decisions = generate(model, rows, args.tokens, vectors)
        by_config = {name: texts[i * len(prompts) : (i + 1) * len(prompts)] for i, (name, _, _) in enumerate(configs)}
        decided = {name: decisions[i * len(prompts) : (i + 1) * len(prompts)] for i, (name, _, _) in enumerate(configs)}
        base = embedder.embed(by_config["unsteered"])
        line = {"prompts": kind}
        for name, _, conditional in configs[1:]:
            cosine = torch.nn.functional.cosine_similarity(embedder.embed(by_config[name]), base).tolist()
            entry = {"mean_cosine_to_unsteered": round(statistics.mean(cosine), 4), "min": round(min(cosine), 4)}
            if conditional:
                entry["applied_share"] = {
                    dim: round(sum(d[dim]["applied"] for d in decided[name]) / len(prompts), 3) for dim in TOPICAL
                }
            line[name] = entry
        if kind == "on_topic":
            for mode in ("always", "conditions"):
                line[f"effect_spread {mode}"] = {
                    dim: round(
                        statistics.mean(effect_scores(embedder, by_config[f"+1 {mode}"], *catalog.heldout_references(dim)))
                        - statistics.mean(effect_scores(embedder, by_config[f"-1 {mode}"], *catalog.heldout_references(dim))),
                        4,
                    )
                    for dim in TOPICAL
                }
        print(json.dumps(line), flush=True)
        for i in range(min(3, len(prompts))):
            print(json.dumps({"answers": kind, "prompt": prompts[i], **{name: by_config[name][i] for name, _, _ in configs}}),
                  flush=True)
    if args.alone:
        alone(model, vectors, embedder, on_topic_prompts, args.tokens)
    if args.cost:
        prefill_cost(model, vectors, EVERYDAY[:8])
    print(json.dumps({"seconds": round(time.monotonic() - started)}), flush=True)


def prefill_cost(model, vectors, prompts, rounds: int = 5) -> None:
    """Seconds to prefill a batch of `prompts` with the five topical dimensions at +1, steered
    always and gated (the read of the prompts up to the condition layer, then the prefill);
    the median of `rounds`."""
    from steering.engine import DecodeBatch

    timings = {}
    for mode in ("always", "conditions", "unsteered"):
        preferences = {} if mode == "unsteered" else dict.fromkeys(TOPICAL, 1.0)
        seconds = []
        for _ in range(rounds):
            rows = [(p, preferences, mode == "conditions") for p in prompts]
            requests = [served(model, vectors, prompt, prefs, conditional, 1) for prompt, prefs, conditional in rows]
            started = time.perf_counter()
            batch = DecodeBatch(model.loaded, model.hooks, requests)
            batch.step()
            seconds.append(time.perf_counter() - started)
        timings[mode] = round(statistics.median(seconds), 4)
    print(json.dumps({"prefill_seconds": timings, "rows": len(prompts), "rounds": rounds}), flush=True)


def alone(model, vectors, embedder, prompts, tokens) -> None:
    """Each topical dimension alone at ±1 on topic: does it still move its Effect with conditions?"""
    keys = [(dim, sign, conditional) for dim in TOPICAL for sign in (1.0, -1.0) for conditional in (False, True)]
    rows = [(p, {dim: sign}, conditional) for dim, sign, conditional in keys for p in prompts]
    texts, decisions = generate(model, rows, tokens, vectors)
    part = {key: texts[i * len(prompts) : (i + 1) * len(prompts)] for i, key in enumerate(keys)}
    applied = {key: decisions[i * len(prompts) : (i + 1) * len(prompts)] for i, key in enumerate(keys)}
    line = {"prompts": "on_topic, each dimension alone"}
    for dim in TOPICAL:
        refs = catalog.heldout_references(dim)
        entry = {}
        for conditional, mode in ((False, "always"), (True, "conditions")):
            effects = {sign: statistics.mean(effect_scores(embedder, part[(dim, sign, conditional)], *refs)) for sign in (1.0, -1.0)}
            entry[f"spread {mode}"] = round(effects[1.0] - effects[-1.0], 4)
        entry["applied_share"] = round(
            sum(d[dim]["applied"] for sign in (1.0, -1.0) for d in applied[(dim, sign, True)]) / (2 * len(prompts)), 3
        )
        line[dim] = entry
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
